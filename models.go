package keypool

import "strings"

// modelFamilies maps model ids to families: the longest matching prefix wins,
// after a dated snapshot suffix is removed. One table, so that a new model is
// one line. Families group usage counts and decide what a key may serve: a
// key whose model list has any model of a family may serve the whole family.
var modelFamilies = []struct{ prefix, family string }{
	{"gpt-5-mini", "gpt-5-mini"},
	{"gpt-5-nano", "gpt-5-nano"},
	{"gpt-5", "gpt-5"},
	{"gpt-4.1-mini", "gpt-4.1-mini"},
	{"gpt-4.1-nano", "gpt-4.1-nano"},
	{"gpt-4.1", "gpt-4.1"},
	{"gpt-4.5", "gpt-4.5"},
	{"gpt-4o-mini-tts", "tts"},
	{"gpt-4o-mini-transcribe", "transcription"},
	{"gpt-4o-transcribe", "transcription"},
	{"gpt-4o-mini", "gpt-4o-mini"},
	{"chatgpt-4o", "gpt-4o"},
	{"gpt-4o", "gpt-4o"},
	{"gpt-4-turbo", "gpt-4-turbo"},
	{"gpt-4-32k", "gpt-4-32k"},
	{"gpt-4", "gpt-4"},
	{"gpt-3.5-turbo", "gpt-3.5-turbo"},
	{"o1-mini", "o1-mini"},
	{"o1", "o1"},
	{"o3-mini", "o3-mini"},
	{"o3", "o3"},
	{"o4-mini", "o4-mini"},
	{"gpt-image", "gpt-image"},
	{"dall-e", "dall-e"},
	{"text-embedding", "embeddings"},
	{"whisper", "transcription"},
	{"tts", "tts"},
	{"omni-moderation", "moderation"},
	{"text-moderation", "moderation"},
	{"babbage", "gpt-base"},
	{"davinci", "gpt-base"},
}

// previewFamilies are ids whose snapshot suffix hides their family: the
// GPT-4 Turbo previews would strip to "gpt-4".
var previewFamilies = map[string]string{
	"gpt-4-1106-preview": "gpt-4-turbo", "gpt-4-0125-preview": "gpt-4-turbo",
	"gpt-4-vision-preview": "gpt-4-turbo", "gpt-4-1106-vision-preview": "gpt-4-turbo",
}

// imageFamilies are the families a trial key never serves (the seed's rule:
// free keys cannot generate images).
var imageFamilies = map[string]bool{"gpt-image": true, "dall-e": true}

// ModelFamily returns the family of a model id: "gpt-4o-2024-08-06",
// "chatgpt-4o-latest" and "gpt-4o" are all "gpt-4o"; "text-embedding-3-small"
// is "embeddings". A model it does not know is a family of its own (its id
// without a dated snapshot suffix), so it never breaks anything. A
// fine-tuned model ("ft:gpt-4o-mini:org::id") belongs to its base's family.
func ModelFamily(model string) string {
	base := strings.TrimPrefix(model, "ft:")
	if i := strings.IndexByte(base, ':'); i >= 0 && base != model {
		base = base[:i]
	}
	if f, ok := previewFamilies[base]; ok {
		return f
	}
	base = stripSnapshot(base)
	best := ""
	family := ""
	for _, f := range modelFamilies {
		if len(f.prefix) > len(best) && strings.HasPrefix(base, f.prefix) && boundary(base, len(f.prefix)) {
			best, family = f.prefix, f.family
		}
	}
	if family != "" {
		return family
	}
	if base == "" {
		return model
	}
	return base
}

// boundary reports whether s[n:] starts a new part of a model id: the end,
// or a separator. "o3" must not claim "o30"; "gpt-4" must not claim "gpt-4o"
// (a longer prefix matches that first), nor "gpt-45".
func boundary(s string, n int) bool {
	if n == len(s) {
		return true
	}
	c := s[n]
	return c == '-' || c == '.' || c == '_' || c == ':' || c < '0' || c > '9' && c < 'a' || s[n-1] == '-'
}

// stripSnapshot removes a dated snapshot suffix: -YYYY-MM-DD, -MMDD and
// -MMDD-preview.
func stripSnapshot(m string) string {
	if n := len(m); n > 11 && m[n-11] == '-' && isDigits(m[n-10:n-6]) && m[n-6] == '-' &&
		isDigits(m[n-5:n-3]) && m[n-3] == '-' && isDigits(m[n-2:]) {
		return m[:n-11]
	}
	t := strings.TrimSuffix(m, "-preview")
	if n := len(t); n > 5 && t[n-5] == '-' && isDigits(t[n-4:]) {
		return t[:n-5]
	}
	return m
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
