/*
 * common_text.c - what mpfarm knows about human languages and their text,
 * stated once: the English name of each language code (which `status`
 * prints and the OpenAI translator puts into its instruction), and the
 * marks that end a sentence and the closing quotes and brackets that may
 * follow them (which the subtitle builder breaks cues after and the
 * DeepL splitter cuts long transcripts at).  Two copies of either list
 * drifted apart before; a language or a mark added here reaches every
 * user.  Pure functions, no state.
 */
#include "common.h"

#include <string.h>
#include <strings.h>

static const struct { const char *code, *name; } text_langs[] = {
	{ "en", "English" }, { "de", "German" }, { "he", "Hebrew" },
	{ "fr", "French" }, { "es", "Spanish" }, { "it", "Italian" },
	{ "pt", "Portuguese" }, { "nl", "Dutch" }, { "ru", "Russian" },
	{ "uk", "Ukrainian" }, { "pl", "Polish" }, { "cs", "Czech" },
	{ "sk", "Slovak" }, { "hu", "Hungarian" }, { "ro", "Romanian" },
	{ "bg", "Bulgarian" }, { "el", "Greek" }, { "tr", "Turkish" },
	{ "ar", "Arabic" }, { "fa", "Persian" }, { "yi", "Yiddish" },
	{ "hi", "Hindi" }, { "zh", "Chinese" }, { "ja", "Japanese" },
	{ "ko", "Korean" }, { "id", "Indonesian" }, { "sv", "Swedish" },
	{ "da", "Danish" }, { "no", "Norwegian" }, { "nb", "Norwegian" },
	{ "fi", "Finnish" }, { "et", "Estonian" }, { "lv", "Latvian" },
	{ "lt", "Lithuanian" }, { "sl", "Slovenian" }, { "hr", "Croatian" },
	{ "sr", "Serbian" }, { "ca", "Catalan" }, { "vi", "Vietnamese" },
	{ "th", "Thai" }, { "la", "Latin" }, { "lad", "Ladino" },
};

/* Closing quotes and brackets that may stand after a sentence's mark
 * ("Stop." she said): ASCII, then », ” and ’.  None is longer than 3
 * bytes (the DeepL splitter's walk relies on that). */
static const char *const text_closers[] = {
	"\"", "'", ")", "]", "\xc2\xbb", "\xe2\x80\x9d", "\xe2\x80\x99",
};

/* The marks that end a sentence; the wide (CJK) ones end it even with no
 * space after them. */
static const struct { const char *mark; bool wide; } text_marks[] = {
	{ ".", false }, { "!", false }, { "?", false },
	{ "\xe2\x80\xa6", false },      /* … */
	{ "\xd8\x9f", false },          /* Arabic question mark */
	{ "\xe0\xa5\xa4", false },      /* Devanagari danda */
	{ "\xe3\x80\x82", true },       /* ideographic full stop */
	{ "\xef\xbc\x81", true },       /* fullwidth ! */
	{ "\xef\xbc\x9f", true },       /* fullwidth ? */
};

#define TEXT_NELEM(a) (sizeof(a) / sizeof((a)[0]))

const char *
text_lang_name(const char *code)
{
	size_t n = strcspn(code, "-_");

	for (size_t i = 0; i < TEXT_NELEM(text_langs); i++) {
		const char *c = text_langs[i].code;
		if (strlen(c) == n && strncasecmp(c, code, n) == 0)
			return text_langs[i].name;
	}
	return NULL;
}

/* Does s[0..n) end with the l bytes of m?  The last byte first: most
 * positions a caller asks about end in none of them. */
static bool
text_ends_with(const char *s, size_t n, const char *m, size_t l)
{
	return n >= l && s[n - 1] == m[l - 1] && memcmp(s + n - l, m, l) == 0;
}

size_t
text_closer_len(const char *s, size_t n)
{
	for (size_t i = 0; i < TEXT_NELEM(text_closers); i++) {
		size_t l = strlen(text_closers[i]);
		if (text_ends_with(s, n, text_closers[i], l))
			return l;
	}
	return 0;
}

size_t
text_closers_trim(const char *s, size_t n)
{
	size_t l;

	while (n > 1 && (l = text_closer_len(s, n)) > 0 && l < n)
		n -= l;
	return n;
}

bool
text_sentence_mark(const char *s, size_t n, bool *wide)
{
	if (wide != NULL)
		*wide = false;
	for (size_t i = 0; i < TEXT_NELEM(text_marks); i++) {
		if (text_ends_with(s, n, text_marks[i].mark,
		    strlen(text_marks[i].mark))) {
			if (wide != NULL)
				*wide = text_marks[i].wide;
			return true;
		}
	}
	return false;
}

bool
text_sentence_end(const char *s, size_t n)
{
	return text_sentence_mark(s, text_closers_trim(s, n), NULL);
}
