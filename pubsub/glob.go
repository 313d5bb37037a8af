package pubsub

// globMatch reports whether s matches the glob pattern as redis's
// stringmatchlen (util.c, case-sensitive) decides, quirks included, so that
// PSUBSCRIBE patterns match the channels redis would: '*', '?', '[...]'
// with '^' negation, 'a-z' ranges (either order) and '\' escapes; an
// unterminated '[' matches what it listed so far; a '\' at the end of the
// pattern is literal. Like redis it compares bytes as signed chars in ranges,
// and gives up beyond a nesting of 1000 '*'.
func globMatch(pattern, s []byte) bool {
	skip := false
	return globMatchImpl(pattern, s, &skip, 0)
}

// at returns p[i], or 0 past its end: redis's patterns are NUL-terminated
// and stringmatchlen reads that terminator in places.
func at(p []byte, i int) byte {
	if i < len(p) {
		return p[i]
	}
	return 0
}

func globMatchImpl(pat, str []byte, skipLonger *bool, nesting int) bool {
	if nesting > 1000 {
		return false
	}
	p, s := 0, 0
	for p < len(pat) && s < len(str) {
		switch pat[p] {
		case '*':
			for p < len(pat) && at(pat, p+1) == '*' {
				p++
			}
			if len(pat)-p == 1 {
				return true
			}
			for s < len(str) {
				if globMatchImpl(pat[p+1:], str[s:], skipLonger, nesting+1) {
					return true
				}
				if *skipLonger {
					return false
				}
				s++
			}
			// No match for the rest of the pattern anywhere in the rest of
			// the string: a longer match for an earlier '*' cannot help.
			*skipLonger = true
			return false
		case '?':
			s++
		case '[':
			p++
			not := at(pat, p) == '^'
			if not {
				p++
			}
			match := false
			for {
				if at(pat, p) == '\\' && len(pat)-p >= 2 {
					p++
					if pat[p] == str[s] {
						match = true
					}
				} else if at(pat, p) == ']' {
					break
				} else if p >= len(pat) {
					p--
					break
				} else if len(pat)-p >= 3 && pat[p+1] == '-' {
					start, end, c := int(int8(pat[p])), int(int8(pat[p+2])), int(int8(str[s]))
					if start > end {
						start, end = end, start
					}
					p += 2
					if c >= start && c <= end {
						match = true
					}
				} else if pat[p] == str[s] {
					match = true
				}
				p++
			}
			if not {
				match = !match
			}
			if !match {
				return false
			}
			s++
		case '\\':
			if len(pat)-p >= 2 {
				p++
			}
			fallthrough
		default:
			if pat[p] != str[s] {
				return false
			}
			s++
		}
		p++
		if s == len(str) {
			for at(pat, p) == '*' {
				p++
			}
			break
		}
	}
	return p >= len(pat) && s == len(str)
}
