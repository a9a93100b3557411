/*
 * test_sentences.c -- the sentence segmenter: the English "Golden Rules"
 * (pass rate printed and held), further English cases, other scripts, line
 * breaks, exact offsets, hostile and invalid input, and the span invariants
 * on every case.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "limits.h"
#include "sentences.h"

/* --- helpers ----------------------------------------------------------- */

/* Decodes one code point of valid UTF-8; returns its length. */
static size_t s_cp(const unsigned char *p, int32_t *u) {
    if (p[0] < 0x80) return *u = p[0], 1;
    if (p[0] < 0xE0) return *u = ((p[0] & 0x1F) << 6) | (p[1] & 0x3F), 2;
    if (p[0] < 0xF0) return *u = ((p[0] & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F), 3;
    *u = ((p[0] & 0x07) << 18) | ((p[1] & 0x3F) << 12) | ((p[2] & 0x3F) << 6) | (p[3] & 0x3F);
    return 4;
}

/* The span invariants: in order, disjoint, inside the text, non-empty,
 * trimmed, every non-space character covered, code-point offsets naming
 * the same characters as the byte offsets.  Returns NULL or what broke. */
static const char *s_check(const char *text, size_t len, const zb_sentences_spans_t *sp) {
    const unsigned char *p = (const unsigned char *)text;
    size_t k = 0, b = 0;
    uint32_t cp = 0;
    while (b < len) {
        int32_t u;
        size_t n = s_cp(p + b, &u);
        bool space = zb_sentences_is_space(u);
        while (k < sp->n && sp->v[k].byte_end <= b) k++;
        if (k < sp->n && sp->v[k].byte_begin == b && sp->v[k].begin != cp)
            return "code-point begin does not match the byte begin";
        if (k < sp->n && sp->v[k].byte_end == b + n && sp->v[k].end != cp + 1)
            return "code-point end does not match the byte end";
        bool inside = k < sp->n && sp->v[k].byte_begin <= b && b < sp->v[k].byte_end;
        if (!space && !inside) return "a non-space character is not covered";
        if (space && k < sp->n && (sp->v[k].byte_begin == b || sp->v[k].byte_end == b + n))
            return "a span is not trimmed";
        b += n;
        cp++;
    }
    for (size_t i = 0; i < sp->n; i++) {
        const zb_sentences_span_t *s = &sp->v[i];
        if (s->byte_begin >= s->byte_end || s->begin >= s->end) return "an empty span";
        if (s->byte_end > len) return "a span runs past the text";
        if (i && s->byte_begin < sp->v[i - 1].byte_end) return "spans overlap or are out of order";
        if ((p[s->byte_begin] & 0xC0) == 0x80 ||
            (s->byte_end < len && (p[s->byte_end] & 0xC0) == 0x80))
            return "a span cuts a code point";
    }
    return NULL;
}

/* Splits text (with options) and checks the invariants. */
static void s_split(const char *text, size_t len, const zb_sentences_options_t *o,
                    zb_sentences_spans_t *sp) {
    int rc = zb_sentences_split_opts(text, len, o, sp);
    assert_int_equal(rc, 0);
    const char *why = s_check(text, len, sp);
    if (why) fprintf(stderr, "invariant broken on \"%.*s\": %s\n", (int)len, text, why);
    assert_null(why);
}

/* Copies s with every whitespace run made one space (the Golden Rules
 * write sentences with line breaks joined). */
static void s_norm(const char *s, size_t n, char *out, size_t cap) {
    size_t o = 0;
    bool sp = false;
    for (size_t i = 0; i < n && o + 1 < cap;) {
        int32_t u;
        size_t k = s_cp((const unsigned char *)s + i, &u);
        if (zb_sentences_is_space(u)) {
            sp = true;
        } else {
            if (sp && o && o + 1 < cap) out[o++] = ' ';
            sp = false;
            for (size_t j = 0; j < k && o + 1 < cap; j++) out[o++] = s[i + j];
        }
        i += k;
    }
    out[o] = 0;
}

/* Whether text splits into exactly the sentences want[] (NULL-terminated),
 * compared with whitespace runs collapsed.  Prints the difference. */
static bool s_same(const char *label, const char *text, const char *const *want,
                   const zb_sentences_options_t *o, bool quiet) {
    zb_sentences_spans_t sp = {0};
    size_t len = strlen(text);
    s_split(text, len, o, &sp);
    size_t nw = 0;
    while (want[nw]) nw++;
    bool ok = sp.n == nw;
    static char got[4096], exp[4096];
    for (size_t i = 0; ok && i < nw; i++) {
        s_norm(text + sp.v[i].byte_begin, sp.v[i].byte_end - sp.v[i].byte_begin, got, sizeof got);
        s_norm(want[i], strlen(want[i]), exp, sizeof exp);
        ok = strcmp(got, exp) == 0;
    }
    if (!ok && !quiet) {
        fprintf(stderr, "%s: \"%s\"\n  got %zu:\n", label, text, sp.n);
        for (size_t i = 0; i < sp.n; i++)
            fprintf(stderr, "    [%.*s]\n", (int)(sp.v[i].byte_end - sp.v[i].byte_begin),
                    text + sp.v[i].byte_begin);
        fprintf(stderr, "  want %zu:\n", nw);
        for (size_t i = 0; i < nw; i++) fprintf(stderr, "    [%s]\n", want[i]);
    }
    zb_sentences_spans_free(&sp);
    return ok;
}

#define WANT(...) ((const char *const[]){__VA_ARGS__, NULL})

static void s_expect(const char *text, const char *const *want) {
    assert_true(s_same("case", text, want, NULL, false));
}

/* --- the Golden Rules (English) ------------------------------------------ */

/* The English "Golden Rules" of the pragmatic segmenter (Kevin Dias,
 * github.com/diasks2/pragmatic_segmenter, README, rules 1-52; pySBD tests
 * the same list), transcribed as data: rule number, input, expected
 * sentences.  Rule 41 expects the line break joined; sentences are compared
 * with whitespace runs collapsed, spans being into the original text. */
typedef struct golden {
    int no;
    const char *text;
    const char *const *want;
} golden_t;

static const golden_t s_golden[] = {
    {1, "Hello World. My name is Jonas.", WANT("Hello World.", "My name is Jonas.")},
    {2, "What is your name? My name is Jonas.", WANT("What is your name?", "My name is Jonas.")},
    {3, "There it is! I found it.", WANT("There it is!", "I found it.")},
    {4, "My name is Jonas E. Smith.", WANT("My name is Jonas E. Smith.")},
    {5, "Please turn to p. 55.", WANT("Please turn to p. 55.")},
    {6, "Were Jane and co. at the party?", WANT("Were Jane and co. at the party?")},
    {7, "They closed the deal with Pitt, Briggs & Co. at noon.",
     WANT("They closed the deal with Pitt, Briggs & Co. at noon.")},
    {8, "Let's ask Jane and co. They should know.",
     WANT("Let's ask Jane and co.", "They should know.")},
    {9, "They closed the deal with Pitt, Briggs & Co. It closed yesterday.",
     WANT("They closed the deal with Pitt, Briggs & Co.", "It closed yesterday.")},
    {10, "I can see Mt. Fuji from here.", WANT("I can see Mt. Fuji from here.")},
    {11, "St. Michael's Church is on 5th st. near the light.",
     WANT("St. Michael's Church is on 5th st. near the light.")},
    {12, "That is JFK Jr.'s book.", WANT("That is JFK Jr.'s book.")},
    {13, "I visited the U.S.A. last year.", WANT("I visited the U.S.A. last year.")},
    {14, "I live in the E.U. How about you?", WANT("I live in the E.U.", "How about you?")},
    {15, "I live in the U.S. How about you?", WANT("I live in the U.S.", "How about you?")},
    {16, "I work for the U.S. Government in Virginia.",
     WANT("I work for the U.S. Government in Virginia.")},
    {17, "I have lived in the U.S. for 20 years.", WANT("I have lived in the U.S. for 20 years.")},
    {18,
     "At 5 a.m. Mr. Smith went to the bank. He left the bank at 6 P.M. Mr. Smith then went to "
     "the store.",
     WANT("At 5 a.m. Mr. Smith went to the bank.", "He left the bank at 6 P.M.",
          "Mr. Smith then went to the store.")},
    {19, "She has $100.00 in her bag.", WANT("She has $100.00 in her bag.")},
    {20, "She has $100.00. It is in her bag.", WANT("She has $100.00.", "It is in her bag.")},
    {21,
     "He teaches science (He previously worked for 5 years as an engineer.) at the local "
     "University.",
     WANT("He teaches science (He previously worked for 5 years as an engineer.) at the local "
          "University.")},
    {22, "Her email is Jane.Doe@example.com. I sent her an email.",
     WANT("Her email is Jane.Doe@example.com.", "I sent her an email.")},
    {23,
     "The site is: https://www.example.50.com/new-site/awesome_content.html. Please check it out.",
     WANT("The site is: https://www.example.50.com/new-site/awesome_content.html.",
          "Please check it out.")},
    {24, "She turned to him, 'This is great.' she said.",
     WANT("She turned to him, 'This is great.' she said.")},
    {25, "She turned to him, \"This is great.\" she said.",
     WANT("She turned to him, \"This is great.\" she said.")},
    {26, "She turned to him, \"This is great.\" She held the book out to show him.",
     WANT("She turned to him, \"This is great.\"", "She held the book out to show him.")},
    {27, "Hello!! Long time no see.", WANT("Hello!!", "Long time no see.")},
    {28, "Hello?? Who is there?", WANT("Hello??", "Who is there?")},
    {29, "Hello!? Is that you?", WANT("Hello!?", "Is that you?")},
    {30, "Hello?! Is that you?", WANT("Hello?!", "Is that you?")},
    {31, "1.) The first item 2.) The second item",
     WANT("1.) The first item", "2.) The second item")},
    {32, "1.) The first item. 2.) The second item.",
     WANT("1.) The first item.", "2.) The second item.")},
    {33, "1) The first item 2) The second item", WANT("1) The first item", "2) The second item")},
    {34, "1) The first item. 2) The second item.",
     WANT("1) The first item.", "2) The second item.")},
    {35, "1. The first item 2. The second item", WANT("1. The first item", "2. The second item")},
    {36, "1. The first item. 2. The second item.",
     WANT("1. The first item.", "2. The second item.")},
    {37, "\xe2\x80\xa2 9. The first item \xe2\x80\xa2 10. The second item",
     WANT("\xe2\x80\xa2 9. The first item", "\xe2\x80\xa2 10. The second item")},
    {38,
     "\xe2\x81\x83"
     "9. The first item \xe2\x81\x83"
     "10. The second item",
     WANT("\xe2\x81\x83"
          "9. The first item",
          "\xe2\x81\x83"
          "10. The second item")},
    {39, "a. The first item b. The second item c. The third list item",
     WANT("a. The first item", "b. The second item", "c. The third list item")},
    {40, "This is a sentence\ncut off in the middle because pdf.",
     WANT("This is a sentence\ncut off in the middle because pdf.")},
    {41, "It was a cold \nnight in the city.", WANT("It was a cold night in the city.")},
    {42, "features\ncontact manager\nevents, activities\n",
     WANT("features", "contact manager", "events, activities")},
    {43, "You can find it at N\xc2\xb0. 1026.253.553. That is where the treasure is.",
     WANT("You can find it at N\xc2\xb0. 1026.253.553.", "That is where the treasure is.")},
    {44, "She works at Yahoo! in the accounting department.",
     WANT("She works at Yahoo! in the accounting department.")},
    {45, "We make a good team, you and I. Did you see Albert I. Jones yesterday?",
     WANT("We make a good team, you and I.", "Did you see Albert I. Jones yesterday?")},
    {46,
     "Thoreau argues that by simplifying one\xe2\x80\x99s life, \xe2\x80\x9cthe laws of the "
     "universe will appear less complex. . . .\xe2\x80\x9d",
     WANT("Thoreau argues that by simplifying one\xe2\x80\x99s life, \xe2\x80\x9cthe laws of the "
          "universe will appear less complex. . . .\xe2\x80\x9d")},
    {47, "\"Bohr [...] used the analogy of parallel stairways [...]\" (Smith 55).",
     WANT("\"Bohr [...] used the analogy of parallel stairways [...]\" (Smith 55).")},
    {48,
     "If words are left off at the end of a sentence, and that is all that is omitted, indicate "
     "the omission with ellipsis marks (preceded and followed by a space) and then indicate the "
     "end of the sentence with a period . . . . Next sentence.",
     WANT("If words are left off at the end of a sentence, and that is all that is omitted, "
          "indicate the omission with ellipsis marks (preceded and followed by a space) and then "
          "indicate the end of the sentence with a period . . . .",
          "Next sentence.")},
    {49, "I never meant that.... She left the store.",
     WANT("I never meant that....", "She left the store.")},
    {50,
     "I wasn\xe2\x80\x99t really ... well, what I mean...see . . . what I'm saying, the thing is "
     ". . . I didn\xe2\x80\x99t mean it.",
     WANT("I wasn\xe2\x80\x99t really ... well, what I mean...see . . . what I'm saying, the "
          "thing is . . . I didn\xe2\x80\x99t mean it.")},
    {51,
     "One further habit which was somewhat weakened . . . was that of combining words into "
     "self-interpreting compounds. . . . The practice was not abandoned. . . .",
     WANT("One further habit which was somewhat weakened . . . was that of combining words into "
          "self-interpreting compounds.",
          ". . . The practice was not abandoned. . . .")},
    {52, "Hello world.Today is Tuesday.Mr. Smith went to the store and bought 1,000.That is a lot.",
     WANT("Hello world.", "Today is Tuesday.", "Mr. Smith went to the store and bought 1,000.",
          "That is a lot.")},
};

/* Rules zbert is known to fail, each with its reason in the report below
 * (none today).  A rule that starts passing or failing changes the test. */
static const int s_golden_known_fail[] = {0};

static void test_golden_rules(void **state) {
    (void)state;
    size_t n = sizeof s_golden / sizeof *s_golden, pass = 0;
    int failed[64];
    size_t n_failed = 0;
    for (size_t i = 0; i < n; i++) {
        char label[32];
        snprintf(label, sizeof label, "golden rule %d", s_golden[i].no);
        if (s_same(label, s_golden[i].text, s_golden[i].want, NULL, false))
            pass++;
        else
            failed[n_failed++] = s_golden[i].no;
    }
    printf("golden rules (English): %zu/%zu passed (%.1f%%)", pass, n, 100.0 * pass / n);
    for (size_t i = 0; i < n_failed; i++) printf("%s%d", i ? ", " : "; failed: ", failed[i]);
    printf("\n");
    assert_int_equal(n, 52);
    size_t n_known = 0;
    for (size_t i = 0; i < sizeof s_golden_known_fail / sizeof *s_golden_known_fail; i++)
        n_known += s_golden_known_fail[i] != 0;
    assert_int_equal(n_failed, n_known);
    for (size_t i = 0; i < n_failed; i++) assert_int_equal(failed[i], s_golden_known_fail[i]);
    assert_true(pass * 100 >= 98 * n); /* at least 98% (pySBD's English rate) */
}

/* --- more English ---------------------------------------------------------- */

static void test_english_more(void **state) {
    (void)state;
    s_expect("Dr. Watson met Prof. Moriarty at 10 a.m. on Friday.",
             WANT("Dr. Watson met Prof. Moriarty at 10 a.m. on Friday."));
    s_expect("We left at 9 p.m. The roads were empty.",
             WANT("We left at 9 p.m.", "The roads were empty."));
    s_expect("The show starts at 8 p.m. It ends late.",
             WANT("The show starts at 8 p.m.", "It ends late."));
    s_expect("Bring snacks, e.g. chips or nuts. Also bring water.",
             WANT("Bring snacks, e.g. chips or nuts.", "Also bring water."));
    s_expect("Use a solvent, i.e. Water, to clean it.",
             WANT("Use a solvent, i.e. Water, to clean it."));
    s_expect("The meeting is on Jan. 5 at noon.", WANT("The meeting is on Jan. 5 at noon."));
    s_expect("See Fig. 3 and Vol. 2 for details.", WANT("See Fig. 3 and Vol. 2 for details."));
    s_expect("It cost $3.50. That was cheap.", WANT("It cost $3.50.", "That was cheap."));
    s_expect("Pi is about 3.14159 and e is about 2.718.",
             WANT("Pi is about 3.14159 and e is about 2.718."));
    s_expect("She said, \"Stop!\" Then she left.", WANT("She said, \"Stop!\"", "Then she left."));
    s_expect("\"Is it you?\" he asked.", WANT("\"Is it you?\" he asked."));
    s_expect("Wait... what was that?", WANT("Wait... what was that?"));
    s_expect("I love NLP", WANT("I love NLP"));
    s_expect("It works! (Mostly.) We ship it.", WANT("It works!", "(Mostly.)", "We ship it."));
    s_expect("Smith et al. found the same. Jones did not.",
             WANT("Smith et al. found the same.", "Jones did not."));
    s_expect("Apple Inc. is big. Microsoft Corp. is too.",
             WANT("Apple Inc. is big.", "Microsoft Corp. is too."));
    s_expect("J. R. R. Tolkien wrote it. Read it.", WANT("J. R. R. Tolkien wrote it.", "Read it."));
    s_expect("Take vitamin C. It helps.", WANT("Take vitamin C.", "It helps."));
    s_expect("I moved to the U.K. in 2019. I like it.",
             WANT("I moved to the U.K. in 2019.", "I like it."));
    s_expect("She has a Ph.D. in physics.", WANT("She has a Ph.D. in physics."));
    s_expect("Q. Who wrote it? A. Nobody knows.", WANT("Q. Who wrote it?", "A. Nobody knows."));
    s_expect("Pay the fee for 1. above and nothing for 2. above.",
             WANT("Pay the fee for 1. above and nothing for 2. above."));
    s_expect("The vote was 5 vs. 3 in favour.", WANT("The vote was 5 vs. 3 in favour."));
    s_expect("I have 600. How many do you have?", WANT("I have 600.", "How many do you have?"));
    s_expect("Version 2.0.1 is out. Update now!", WANT("Version 2.0.1 is out.", "Update now!"));
    s_expect("Visit www.example.com. It is fun.", WANT("Visit www.example.com.", "It is fun."));
    s_expect("Call System.Console.WriteLine now.", WANT("Call System.Console.WriteLine now."));
    s_expect("Hello!How are you?", WANT("Hello!", "How are you?"));
    s_expect("\xc2\xbf"
             "Qu\xc3\xa9 tal? \xc2\xa1"
             "Bien!",
             WANT("\xc2\xbfQu\xc3\xa9 tal?", "\xc2\xa1"
                                             "Bien!"));
    s_expect("Is it 5 p.m.? No.", WANT("Is it 5 p.m.?", "No."));
    s_expect("He said no. Then he left.", WANT("He said no.", "Then he left."));
    s_expect("The end\xe2\x80\xa6. Next one.", WANT("The end\xe2\x80\xa6.", "Next one."));
    s_expect("Wait\xe2\x80\xa6 and see.", WANT("Wait\xe2\x80\xa6 and see."));
}

/* The fragment rule for multi-period abbreviations: a sentence needs more
 * than three words to end at "p.m." before a sentence opener. */
static void test_fragment_rule(void **state) {
    (void)state;
    s_expect("By 6 p.m. Mr. Lee had gone home.", WANT("By 6 p.m. Mr. Lee had gone home."));
    s_expect("The train left the station at 6 p.m. Mr. Lee was on it.",
             WANT("The train left the station at 6 p.m.", "Mr. Lee was on it."));
}

/* --- lists ------------------------------------------------------------------ */

static void test_lists(void **state) {
    (void)state;
    s_expect("The steps: i. wash ii. dry iii. fold. Then rest.",
             WANT("The steps: i. wash", "ii. dry", "iii. fold.", "Then rest."));
    s_expect("We need: a) apples b) pears c) plums.",
             WANT("We need: a) apples", "b) pears", "c) plums."));
    s_expect("(1) first; (2) second; (3) third.", WANT("(1) first;", "(2) second;", "(3) third."));
    s_expect("I. Background\nII. Methods\nIII. Results",
             WANT("I. Background", "II. Methods", "III. Results"));
    /* out of sequence, or not after a colon: no list */
    s_expect("Time: 5. Go.", WANT("Time: 5.", "Go."));
    s_expect("1. The first item 3. The third item", WANT("1. The first item 3.", "The third item"));
    /* upper-case letters are initials more often than an outline */
    s_expect("A. Smith and B. Jones came.", WANT("A. Smith and B. Jones came."));
    /* a year is not an item number */
    s_expect("1999. It was the year.", WANT("1999.", "It was the year."));
}

/* --- the semicolon ------------------------------------------------------- */

static void test_semicolon(void **state) {
    (void)state;
    const char *t = "I came; I saw; I conquered.";
    assert_true(s_same("default", t, WANT("I came; I saw; I conquered."), NULL, false));
    zb_sentences_options_t o = {.semicolon_ends = true};
    assert_true(s_same("semicolon", t, WANT("I came;", "I saw;", "I conquered."), &o, false));
    /* still one sentence when nothing follows the semicolon */
    assert_true(s_same("semicolon end", "Done;", WANT("Done;"), &o, false));
}

/* --- empty, blank, no punctuation ------------------------------------------ */

static void test_empty_and_blank(void **state) {
    (void)state;
    zb_sentences_spans_t sp = {0};
    assert_int_equal(zb_sentences_split("", 0, &sp), 0);
    assert_int_equal(sp.n, 0);
    assert_int_equal(zb_sentences_split(NULL, 0, &sp), 0);
    assert_int_equal(sp.n, 0);
    const char *blank = " \t\n\r\n\v\f\xc2\xa0\xe3\x80\x80\xe2\x80\xa8\xe2\x80\xa9\xc2\x85";
    s_split(blank, strlen(blank), NULL, &sp);
    assert_int_equal(sp.n, 0);
    s_split("  no punctuation at all  ", 25, NULL, &sp);
    assert_int_equal(sp.n, 1);
    assert_int_equal(sp.v[0].byte_begin, 2);
    assert_int_equal(sp.v[0].byte_end, 23);
    s_split(".", 1, NULL, &sp);
    assert_int_equal(sp.n, 1);
    s_split("?!", 2, NULL, &sp);
    assert_int_equal(sp.n, 1);
    /* zero-width space is not White_Space: it is text and is covered */
    s_split("\xe2\x80\x8b", 3, NULL, &sp);
    assert_int_equal(sp.n, 1);
    assert_int_equal(zb_sentences_split(NULL, 3, &sp), ZB_EINVAL);
    assert_int_equal(zb_sentences_split("a", 1, NULL), ZB_EINVAL);
    zb_sentences_spans_free(&sp);
    zb_sentences_spans_free(&sp); /* twice is harmless */
    zb_sentences_spans_free(NULL);
}

/* --- exact offsets on multi-byte text ---------------------------------------- */

static void test_offsets_multibyte(void **state) {
    (void)state;
    /* "Café crème. Ça va? 東京へ行く。" -- é è Ç are 2 bytes, CJK 3 bytes */
    const char *t = "Caf\xc3\xa9 cr\xc3\xa8me. \xc3\x87"
                    "a va? "
                    "\xe6\x9d\xb1\xe4\xba\xac\xe3\x81\xb8\xe8\xa1\x8c\xe3\x81\x8f\xe3\x80\x82";
    zb_sentences_spans_t sp = {0};
    s_split(t, strlen(t), NULL, &sp);
    assert_int_equal(sp.n, 3);
    /* code points: "Café crème." = 0..11, "Ça va?" = 12..18, "東京へ行く。" = 19..25 */
    uint32_t want[3][4] = {{0, 11, 0, 13}, {12, 18, 14, 21}, {19, 25, 22, 40}};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(sp.v[i].begin, want[i][0]);
        assert_int_equal(sp.v[i].end, want[i][1]);
        assert_int_equal(sp.v[i].byte_begin, want[i][2]);
        assert_int_equal(sp.v[i].byte_end, want[i][3]);
    }
    assert_int_equal(strlen(t), 40);
    /* a 4-byte character (U+1F600) before the boundary */
    const char *e = "Smile \xf0\x9f\x98\x80. Next.";
    s_split(e, strlen(e), NULL, &sp);
    assert_int_equal(sp.n, 2);
    assert_int_equal(sp.v[0].end, 8);
    assert_int_equal(sp.v[0].byte_end, 11);
    assert_int_equal(sp.v[1].begin, 9);
    assert_int_equal(sp.v[1].byte_begin, 12);
    assert_int_equal(sp.v[1].end, 14);
    assert_int_equal(sp.v[1].byte_end, 17);
    zb_sentences_spans_free(&sp);
}

/* --- other scripts -------------------------------------------------------- */

static void test_cjk_and_scripts(void **state) {
    (void)state;
    /* Japanese Golden Rules 1-5 of the same list */
    s_expect("\xe3\x81\x93\xe3\x82\x8c\xe3\x81\xaf\xe3\x83\x9a\xe3\x83\xb3\xe3\x81\xa7\xe3\x81\x99"
             "\xe3\x80\x82\xe3\x81\x9d\xe3\x82\x8c\xe3\x81\xaf\xe3\x83\x9e\xe3\x83\xbc\xe3\x82\xab"
             "\xe3\x83\xbc\xe3\x81\xa7\xe3\x81\x99\xe3\x80\x82",
             WANT("\xe3\x81\x93\xe3\x82\x8c\xe3\x81\xaf\xe3\x83\x9a\xe3\x83\xb3\xe3\x81\xa7\xe3\x81"
                  "\x99\xe3\x80\x82",
                  "\xe3\x81\x9d\xe3\x82\x8c\xe3\x81\xaf\xe3\x83\x9e\xe3\x83\xbc\xe3\x82\xab\xe3\x83"
                  "\xbc\xe3\x81\xa7\xe3\x81\x99\xe3\x80\x82"));
    s_expect("\xe3\x81\x9d\xe3\x82\x8c\xe3\x81\xaf\xe4\xbd\x95\xe3\x81\xa7\xe3\x81\x99\xe3\x81\x8b"
             "\xef\xbc\x9f\xe3\x83\x9a\xe3\x83\xb3\xe3\x81\xa7\xe3\x81\x99\xe3\x81\x8b\xef\xbc\x9f",
             WANT("\xe3\x81\x9d\xe3\x82\x8c\xe3\x81\xaf\xe4\xbd\x95\xe3\x81\xa7\xe3\x81\x99\xe3\x81"
                  "\x8b\xef\xbc\x9f",
                  "\xe3\x83\x9a\xe3\x83\xb3\xe3\x81\xa7\xe3\x81\x99\xe3\x81\x8b\xef\xbc\x9f"));
    s_expect("\xe8\x89\xaf\xe3\x81\x8b\xe3\x81\xa3\xe3\x81\x9f\xe3\x81\xad\xef\xbc\x81\xe3\x81\x99"
             "\xe3\x81\x94\xe3\x81\x84\xef\xbc\x81",
             WANT("\xe8\x89\xaf\xe3\x81\x8b\xe3\x81\xa3\xe3\x81\x9f\xe3\x81\xad\xef\xbc\x81",
                  "\xe3\x81\x99\xe3\x81\x94\xe3\x81\x84\xef\xbc\x81"));
    /* a quotation inside the sentence, with a full-width decimal point */
    s_expect("\xe5\xb9\xb9\xe9\x83\xa8\xe3\x81\xaf\xe3\x80\x81\xe3\x80\x8c\xe5\xb9\x85\xe3\x81\xaf"
             "\xef\xbc\x93\xef\xbc\x8e\xef\xbc\x92\xef\xbc\x99\xef\xbc\x85\xe4\xbb\xa5\xe4\xb8\x8a"
             "\xe3\x81\xa0\xef\xbc\x81\xe3\x80\x8d\xe3\x81\xa8\xe8\xa8\x80\xe3\x81\xa3\xe3\x81\x9f"
             "\xe3\x80\x82",
             WANT("\xe5\xb9\xb9\xe9\x83\xa8\xe3\x81\xaf\xe3\x80\x81\xe3\x80\x8c\xe5\xb9\x85\xe3\x81"
                  "\xaf\xef\xbc\x93\xef\xbc\x8e\xef\xbc\x92\xef\xbc\x99\xef\xbc\x85\xe4\xbb\xa5\xe4"
                  "\xb8\x8a\xe3\x81\xa0\xef\xbc\x81\xe3\x80\x8d\xe3\x81\xa8\xe8\xa8\x80\xe3\x81\xa3"
                  "\xe3\x81\x9f\xe3\x80\x82"));
    /* an errant line break inside a sentence */
    s_expect("\xe3\x81\x93\xe3\x82\x8c\xe3\x81\xaf\xe7\x88\xb6\xe3\x81\xae\n\xe5\xae\xb6\xe3\x81"
             "\xa7\xe3\x81\x99\xe3\x80\x82",
             WANT("\xe3\x81\x93\xe3\x82\x8c\xe3\x81\xaf\xe7\x88\xb6\xe3\x81\xae\n\xe5\xae\xb6\xe3"
                  "\x81\xa7\xe3\x81\x99\xe3\x80\x82"));
    /* Chinese, closing quote after the full stop stays with its sentence */
    s_expect("\xe4\xbb\x96\xe8\xaf\xb4\xef\xbc\x9a\xe2\x80\x9c\xe5\xa5\xbd\xe3\x80\x82\xe2\x80\x9d"
             " \xe6\x88\x91\xe4\xbb\xac\xe8\xb5\xb0\xe5\x90\xa7\xef\xbc\x9f",
             WANT("\xe4\xbb\x96\xe8\xaf\xb4\xef\xbc\x9a\xe2\x80\x9c\xe5\xa5\xbd\xe3\x80\x82\xe2\x80"
                  "\x9d",
                  "\xe6\x88\x91\xe4\xbb\xac\xe8\xb5\xb0\xe5\x90\xa7\xef\xbc\x9f"));
    /* Hindi danda */
    s_expect("\xe0\xa4\xaf\xe0\xa4\xb9 \xe0\xa4\x8f\xe0\xa4\x95 \xe0\xa4\xb9\xe0\xa5\x88\xe0\xa5"
             "\xa4 \xe0\xa4\xb5\xe0\xa4\xb9 \xe0\xa4\xa6\xe0\xa5\x8b \xe0\xa4\xb9\xe0\xa5\x88\xe0"
             "\xa5\xa4",
             WANT("\xe0\xa4\xaf\xe0\xa4\xb9 \xe0\xa4\x8f\xe0\xa4\x95 \xe0\xa4\xb9\xe0\xa5\x88\xe0"
                  "\xa5\xa4",
                  "\xe0\xa4\xb5\xe0\xa4\xb9 \xe0\xa4\xa6\xe0\xa5\x8b \xe0\xa4\xb9\xe0\xa5\x88\xe0"
                  "\xa5\xa4"));
    /* Arabic question mark, then an Arabic sentence with a Latin period */
    s_expect("\xd9\x85\xd8\xa7\xd8\xb0\xd8\xa7 \xd8\xad\xd8\xaf\xd8\xab\xd8\x9f \xd9\x84\xd8\xa7 "
             "\xd8\xb4\xd9\x8a\xd8\xa1. \xd8\xa7\xd9\x86\xd8\xaa\xd9\x87\xd9\x89.",
             WANT("\xd9\x85\xd8\xa7\xd8\xb0\xd8\xa7 \xd8\xad\xd8\xaf\xd8\xab\xd8\x9f",
                  "\xd9\x84\xd8\xa7 \xd8\xb4\xd9\x8a\xd8\xa1.",
                  "\xd8\xa7\xd9\x86\xd8\xaa\xd9\x87\xd9\x89."));
    /* Greek question mark (U+037E) and Russian */
    s_expect("\xce\xa4\xce\xb9 \xce\xba\xce\xac\xce\xbd\xce\xb5\xce\xb9\xcf\x82\xcd\xbe "
             "\xce\x9a\xce\xb1\xce\xbb\xce\xac.",
             WANT("\xce\xa4\xce\xb9 \xce\xba\xce\xac\xce\xbd\xce\xb5\xce\xb9\xcf\x82\xcd\xbe",
                  "\xce\x9a\xce\xb1\xce\xbb\xce\xac."));
    s_expect("\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82. \xd0\x9a\xd0\xb0\xd0\xba "
             "\xd0\xb4\xd0\xb5\xd0\xbb\xd0\xb0?",
             WANT("\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82.",
                  "\xd0\x9a\xd0\xb0\xd0\xba \xd0\xb4\xd0\xb5\xd0\xbb\xd0\xb0?"));
}

/* --- line breaks ---------------------------------------------------------- */

static void test_line_breaks(void **state) {
    (void)state;
    /* a blank line always ends a sentence, whatever the line endings */
    s_expect("first part\n\nsecond part", WANT("first part", "second part"));
    s_expect("first part\r\n\r\nsecond part", WANT("first part", "second part"));
    s_expect("first part\n \t\nsecond part", WANT("first part", "second part"));
    s_expect("first part\xe2\x80\xa9second part", WANT("first part", "second part"));
    s_expect("first part\fsecond part", WANT("first part", "second part"));
    s_expect("Mr.\n\nSmith", WANT("Mr.", "Smith"));
    /* \r\n is one line break: a soft wrap in punctuated text */
    s_expect("a line that wraps\r\nin the middle.", WANT("a line that wraps\r\nin the middle."));
    /* a paragraph with no terminator is a list of lines */
    s_expect("Home\nAbout us\nContact", WANT("Home", "About us", "Contact"));
    /* a heading line before its text */
    s_expect("Introduction\nThis paper shows a result. It holds.",
             WANT("Introduction", "This paper shows a result.", "It holds."));
    s_expect("Results and Discussion\nWe found nothing.",
             WANT("Results and Discussion", "We found nothing."));
    /* but a capitalised word after an ordinary line is a soft wrap */
    s_expect("Yesterday we went to see\nJohn and his sister.",
             WANT("Yesterday we went to see\nJohn and his sister."));
    /* list items at line starts */
    s_expect("Buy these today.\n- milk\n- eggs and bread\n- tea",
             WANT("Buy these today.", "- milk", "- eggs and bread", "- tea"));
    s_expect("Steps to follow.\n1. Open the box\n2. Take it out\n3. Enjoy",
             WANT("Steps to follow.", "1. Open the box", "2. Take it out", "3. Enjoy"));
    s_expect("Options are below.\n(a) red\n(b) blue",
             WANT("Options are below.", "(a) red", "(b) blue"));
}

/* --- invalid input and limits ------------------------------------------------ */

static void test_invalid_utf8(void **state) {
    (void)state;
    static const char *const bad[] = {
        "\xff",         "abc\x80",          "\xc0\x80",
        "\xc1\xbf",     "\xe0\x80\x80",     "\xed\xa0\x80",
        "\xed\xbf\xbf", "\xf4\x90\x80\x80", "\xf8\x88\x80\x80",
        "ok. \xe6\x97", "\xe6\x97 ok",      "\xf0\x9f\x98",
        "\xc3",         "Hello.\xc3\x28",
    };
    zb_sentences_spans_t sp = {0};
    s_split("Some text. More.", 16, NULL, &sp);
    assert_int_equal(sp.n, 2);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = zb_sentences_split(bad[i], strlen(bad[i]), &sp);
        if (rc != ZB_EUTF8) fprintf(stderr, "bad[%zu] gave %d\n", i, rc);
        assert_int_equal(rc, ZB_EUTF8);
        assert_int_equal(sp.n, 0);
    }
    /* the largest code point and a NUL byte are valid text */
    s_split("\xf4\x8f\xbf\xbf", 4, NULL, &sp);
    assert_int_equal(sp.n, 1);
    s_split("a\0b. C", 6, NULL, &sp);
    assert_int_equal(sp.n, 2);
    zb_sentences_spans_free(&sp);
}

static void test_limit(void **state) {
    (void)state;
    size_t n = (size_t)ZB_TEXT_BYTES_MAX + 1;
    char *t = malloc(n);
    assert_non_null(t);
    memset(t, 'a', n);
    zb_sentences_spans_t sp = {0};
    assert_int_equal(zb_sentences_split(t, n, &sp), ZB_ELIMIT);
    assert_int_equal(sp.n, 0);
    s_split(t, n - 1, NULL, &sp); /* exactly the limit is fine: one long word */
    assert_int_equal(sp.n, 1);
    assert_int_equal(sp.v[0].byte_end, n - 1);
    assert_int_equal(sp.v[0].end, n - 1);
    free(t);
    zb_sentences_spans_free(&sp);
}

/* --- long and hostile text --------------------------------------------------- */

static double s_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); /* CPU time: immune to a loaded machine */
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Fills a ZB_TEXT_BYTES_MAX buffer with copies of unit and splits it;
 * returns the number of sentences and checks the time stays linear-ish. */
static size_t s_fill_split(const char *unit, zb_sentences_spans_t *sp) {
    size_t n = ZB_TEXT_BYTES_MAX, u = strlen(unit), len = n - n % u;
    char *t = malloc(n);
    assert_non_null(t);
    for (size_t i = 0; i < len; i += u) memcpy(t + i, unit, u);
    double t0 = s_now();
    s_split(t, len, NULL, sp);
    double dt = s_now() - t0;
    /* generous: a quadratic pass over 1 MiB would take minutes */
    if (dt > 5.0) fprintf(stderr, "\"%s\" x %zu took %.2f s\n", unit, len / u, dt);
    assert_true(dt < 5.0);
    free(t);
    return sp->n;
}

static void test_long_and_hostile(void **state) {
    (void)state;
    zb_sentences_spans_t sp = {0};
    const char *unit = "Hello world. ";
    size_t n = ZB_TEXT_BYTES_MAX / strlen(unit);
    assert_int_equal(s_fill_split(unit, &sp), n);
    assert_int_equal(sp.v[n - 1].end, (uint32_t)(n * strlen(unit) - 1));
    /* one long sentence: every piece stays in it */
    assert_int_equal(s_fill_split("and so on ", &sp), 1);
    /* pathological shapes: each must finish and keep the invariants */
    static const char *const shapes[] = {
        ".",
        ". ",
        "(",
        ")",
        "\"",
        "...",
        "a.",
        "A. ",
        "1. ",
        "U.S. ",
        "!?",
        "\n",
        "\n\n",
        "• ",
        "。",
        "a.B",
        "x.Yz",
        "1) ",
        "\xe2\x80\xa6 ",
        "Mr. ",
        "a. b. ",
        ". . . ",
        "(a) ",
        "\xef\xbc\x8e\xef\xbc\x91",
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) s_fill_split(shapes[i], &sp);
    zb_sentences_spans_free(&sp);
}

/* The output array is reused: n is reset, memory kept. */
static void test_reuse(void **state) {
    (void)state;
    zb_sentences_spans_t sp = {0};
    s_split("One. Two. Three.", 16, NULL, &sp);
    assert_int_equal(sp.n, 3);
    zb_sentences_span_t *v = sp.v;
    s_split("Only one", 8, NULL, &sp);
    assert_int_equal(sp.n, 1);
    assert_ptr_equal(sp.v, v);
    zb_sentences_spans_free(&sp);
    assert_null(sp.v);
    assert_int_equal(sp.cap, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_rules),
        cmocka_unit_test(test_english_more),
        cmocka_unit_test(test_fragment_rule),
        cmocka_unit_test(test_lists),
        cmocka_unit_test(test_semicolon),
        cmocka_unit_test(test_empty_and_blank),
        cmocka_unit_test(test_offsets_multibyte),
        cmocka_unit_test(test_cjk_and_scripts),
        cmocka_unit_test(test_line_breaks),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_long_and_hostile),
        cmocka_unit_test(test_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
