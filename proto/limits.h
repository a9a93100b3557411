/*
 * limits.h -- every hard limit of zbert, each with its reason.
 *
 * Untrusted values (file headers, wire messages, argv, input lines) are
 * checked against these before anything is allocated from them.  Raising a
 * limit is a decision: change it here, with the reason.
 */
#ifndef ZB_LIMITS_H
#define ZB_LIMITS_H

/* --- model files ------------------------------------------------------- */

/* safetensors JSON header: Hugging Face's own reader refuses more than
 * 100 MB; real BERT headers are ~20 KB. */
#define ZB_SAFETENSORS_HEADER_MAX (100u * 1000u * 1000u)

/* Tensors in one safetensors file or bundle: BERT-large with heads has ~400. */
#define ZB_TENSORS_MAX 4096

/* Dimensions of one tensor: BERT uses at most 2. */
#define ZB_TENSOR_DIMS_MAX 8

/* Tensor name bytes: real names are < 100 bytes. */
#define ZB_TENSOR_NAME_MAX 256

/* Architecture bounds: generous for any BERT variant, small enough that
 * products of them cannot overflow 64-bit sizes. */
#define ZB_LAYERS_MAX       128
#define ZB_HIDDEN_MAX       16384
#define ZB_HEADS_MAX        256
#define ZB_INTERMEDIATE_MAX 65536
#define ZB_POSITIONS_MAX    8192
#define ZB_TYPE_VOCAB_MAX   64

/* Vocabulary: entries and bytes per entry (bert-base-cased has 28996;
 * multilingual vocabularies have ~120k). */
#define ZB_VOCAB_MAX             (1 << 21)
#define ZB_VOCAB_ENTRY_BYTES_MAX 256

/* Small text files of a model (config.json, manifest, vocab.txt). */
#define ZB_MODEL_TEXT_FILE_MAX (64u * 1024u * 1024u)

/* Zip archive entries in a bundle: it holds three. */
#define ZB_BUNDLE_ENTRIES_MAX 64

/* Bytes of a bundle's weights entry: bundles are plain zip (no zip64), so the
 * whole archive must stay under 4 GiB; this leaves room for the manifest and
 * vocabulary.  BERT-large in fp32 is 1.34 GB. */
#define ZB_BUNDLE_WEIGHTS_MAX 0xF0000000u

/* Bytes of a zip comment that may follow a bundle's end-of-central-directory
 * record: the zip format's own maximum (16-bit length). */
#define ZB_ZIP_COMMENT_MAX 65535u

/* --- text -------------------------------------------------------------- */

/* Hugging Face BertTokenizer turns a word longer than this (in code points)
 * into one [UNK]. */
#define ZB_WORD_CHARS_MAX 100

/* One input text: 1 MiB is ~2000 pages; beyond it a caller should split. */
#define ZB_TEXT_BYTES_MAX (1u << 20)

/* Texts a calibration file (zbert-model convert --calibrate) may hold: a few
 * hundred are plenty; the cap keeps a wrong file from running for hours. */
#define ZB_CALIB_TEXTS_MAX 100000

/* One input line of zbert-embed (a JSON object holding a text). */
#define ZB_INPUT_LINE_MAX (8u << 20)

/* --- forward pass ------------------------------------------------------ */

/* Tokens of one forward batch: the scratch arena holds ~(6H + I) floats per
 * token (30 KB for bert-base, so 2 GB here), and n_tokens * width stays
 * far inside the int range the GEMMs take. */
#define ZB_BATCH_TOKENS_MAX 65536

/* OpenMP threads of one engine context: beyond any machine we target; each
 * holds a seq_len_max^2 attention score buffer (1 MiB at 512). */
#define ZB_THREADS_MAX 256

/* --- wire protocol (proto/PROTOCOL.md, section 2) ------------------------ */

/* One message body: also ZMQ_MAXMSGSIZE on every socket.  An embed of
 * 100,000 short texts fits; a part of 64 texts x 512 rows x 768 floats is
 * 100 MB. */
#define ZB_MSG_BODY_MAX (256u << 20)

/* Texts of one embed or task (and texts a part or result covers): a larger
 * job is split by the client, as the CLI does. */
#define ZB_MSG_TEXTS_MAX 100000u

/* Request id bytes (at least 1): fits any UUID or counter. */
#define ZB_MSG_ID_BYTES_MAX 64u

/* Keys of one map a receiver reads: every message has fewer than 20. */
#define ZB_MSG_KEYS_MAX 64u

/* Bytes of one key: every key is a short name.  Also what keeps duplicate
 * detection (pairwise over at most 64 keys) cheap. */
#define ZB_MSG_KEY_BYTES_MAX 64u

/* Nesting of maps and arrays, the body map being depth 1 (also inside
 * values a receiver ignores): the deepest field of version 1 is at 3. */
#define ZB_MSG_DEPTH_MAX 8

/* Worker name and model identity bytes (at least 1): host:pid, a model name
 * and a content hash fit. */
#define ZB_MSG_NAME_BYTES_MAX 256u

/* Bytes of an error sentence (error message, per-text error): one
 * sentence for people, not a log. */
#define ZB_MSG_MESSAGE_BYTES_MAX 1024u

/* Workers listed by one status reply: more than one broker drives. */
#define ZB_MSG_WORKERS_MAX 4096u

/* Credit a worker asks for (shards it holds at once): twice its batch is
 * plenty; more only hoards work other workers could run. */
#define ZB_MSG_CREDIT_MAX 1024u

/* Ids in a status reply's `open` (revision 1.3): the broker bounds a
 * client's open requests; more than it tracks would be a list, not an
 * answer. */
#define ZB_MSG_OPEN_MAX 1024u

#endif
