//! Version-aware ordering of extension names, the rule systemd uses to stack layers: the name that
//! sorts last ends up on top. This follows the UAPI version format specification
//! (`strverscmp_improved` in systemd): `~` sorts before everything, `-` and `^` and `.` separate
//! segments, digit runs compare numerically, letter runs lexically, and any other character is
//! skipped.

use std::cmp::Ordering;

fn is_version_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'~' | b'-' | b'^' | b'.')
}

/// `true` sorts before `false`: the side that has the marker is the older one.
fn marker(a: &[u8], b: &[u8], m: u8) -> Option<Ordering> {
    let (am, bm) = (a.first() == Some(&m), b.first() == Some(&m));
    (am || bm).then(|| bm.cmp(&am))
}

pub fn compare(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        while a.first().is_some_and(|&c| !is_version_char(c)) {
            a = &a[1..];
        }
        while b.first().is_some_and(|&c| !is_version_char(c)) {
            b = &b[1..];
        }
        // '~' marks a pre-release: older than anything, even the end of the string.
        if let Some(o) = marker(a, b, b'~') {
            if o != Ordering::Equal {
                return o;
            }
            a = &a[1..];
            b = &b[1..];
        }
        if a.is_empty() || b.is_empty() {
            return a.cmp(b);
        }
        for m in [b'-', b'^', b'.'] {
            if let Some(o) = marker(a, b, m) {
                if o != Ordering::Equal {
                    return o;
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
        let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
        let (an, bn);
        if a.first().is_some_and(u8::is_ascii_digit) || b.first().is_some_and(u8::is_ascii_digit) {
            (an, bn) = (digits(a), digits(b));
            // A number is newer than no number.
            let o = (an > 0).cmp(&(bn > 0));
            if o != Ordering::Equal {
                return o;
            }
            let trim = |s: &[u8]| s.iter().take_while(|&&c| c == b'0').count();
            let (az, bz) = (trim(&a[..an]), trim(&b[..bn]));
            let (x, y) = (&a[az..an], &b[bz..bn]);
            let o = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            let alpha = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_alphabetic()).count();
            (an, bn) = (alpha(a), alpha(b));
            let o = a[..an].cmp(&b[..bn]);
            if o != Ordering::Equal {
                return o;
            }
        }
        a = &a[an..];
        b = &b[bn..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn ordering_examples() {
        let older_newer = [
            ("1", "2"),
            ("9", "10"),
            ("1.2", "1.10"),
            ("1.0~rc1", "1.0"),
            ("1.0~rc1", "1.0~rc2"),
            ("123-9", "123.1"),
            ("1.0", "1.0^patch"),
            ("a", "b"),
            ("podman", "podman-5"),
            ("alpha", "1"),
            ("foo-1.2", "foo-1.10"),
            ("", "0"),
        ];
        for (a, b) in older_newer {
            assert_eq!(compare(a, b), Less, "{a} < {b}");
            assert_eq!(compare(b, a), Greater, "{b} > {a}");
        }
    }

    #[test]
    fn equal_cases() {
        for (a, b) in [("1.0", "1.0"), ("007", "7"), ("1+", "1"), ("", "")] {
            assert_eq!(compare(a, b), Equal, "{a} == {b}");
        }
    }

    #[test]
    fn sorting_puts_newest_last() {
        let mut v = vec!["ext-10", "ext-9", "ext-1.5", "ext-1.5~beta"];
        v.sort_by(|a, b| compare(a, b));
        assert_eq!(v, ["ext-1.5~beta", "ext-1.5", "ext-9", "ext-10"]);
    }
}
