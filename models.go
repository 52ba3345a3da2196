package keypool

import "strings"

// ModelFamily groups a model id with its dated snapshots, for usage counts:
// "gpt-4o-2024-08-06" and "gpt-4o" are both "gpt-4o", "gpt-4-0613" is
// "gpt-4". An id it does not know stays a family of its own.
func ModelFamily(model string) string {
	m := model
	// -YYYY-MM-DD
	if n := len(m); n > 11 && m[n-11] == '-' && isDigits(m[n-10:n-6]) && m[n-6] == '-' &&
		isDigits(m[n-5:n-3]) && m[n-3] == '-' && isDigits(m[n-2:]) {
		m = m[:n-11]
	}
	// -MMDD, -MMDD-preview
	m = strings.TrimSuffix(m, "-preview")
	if n := len(m); n > 5 && m[n-5] == '-' && isDigits(m[n-4:]) {
		m = m[:n-5]
	}
	if m == "" {
		return model
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
