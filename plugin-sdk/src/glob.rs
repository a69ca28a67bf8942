//! Tag globs: `*` (any run of characters), `?` (one character) and classes
//! `[abc]`, `[a-z]`, `[!a-z]`. Tags have no path separators, so `*` crosses
//! everything. Written here rather than taken from a crate because plugins
//! pay for every dependency in component size and load time.

/// Whether `text` matches all of `pattern`. A malformed pattern matches
/// nothing; [`validate`] reports why.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matching with one backtrack point for the last `*`: linear
    // for patterns with a single star, never exponential.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class(&p, pi, t[ti]) {
                        if matched {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else {
                        return false;
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`. Returns
/// whether it matched and the index after the class, or `None` if the class
/// is not closed.
fn class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&hi| hi != ']') {
            let hi = p[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

/// Why `pattern` is not a glob, if it is not.
pub fn validate(pattern: &str) -> Result<(), String> {
    let p: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < p.len() {
        if p[i] == '[' {
            match class(&p, i, '\0') {
                Some((_, next)) => i = next,
                None => return Err("unclosed `[`".to_owned()),
            }
        } else {
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_questions() {
        assert!(matches("v*", "v1.2.3"));
        assert!(matches("v*", "v"));
        assert!(!matches("v*", "latest"));
        assert!(matches("*-rc*", "1.0-rc2"));
        assert!(matches("*", ""));
        assert!(matches("latest", "latest"));
        assert!(!matches("latest", "latest2"));
        assert!(matches("v?.?", "v1.2"));
        assert!(!matches("v?.?", "v10.2"));
        assert!(matches("*a*b*c", "xxaxxbxxc"));
        assert!(!matches("*a*b*c", "xxaxxcxxb"));
    }

    #[test]
    fn classes() {
        assert!(matches("v[0-9]*", "v1.0"));
        assert!(!matches("v[0-9]*", "vx"));
        assert!(matches("[!l]*", "v1"));
        assert!(!matches("[!l]*", "latest"));
        assert!(matches("[]]", "]"));
        assert!(matches("[a-]", "-"));
        assert!(!matches("[abc", "a"));
        assert!(validate("[abc").is_err());
        assert!(validate("v[0-9]*").is_ok());
    }

    #[test]
    fn many_stars_stay_fast() {
        let pattern = "*a".repeat(30);
        let text = "a".repeat(29) + "b";
        assert!(!matches(&pattern, &text));
    }
}
