//! A parser for UCI files (`/etc/config/NAME`) that accepts what `uci` itself accepts.
//!
//! It follows libuci's `file.c` rules: commands `package`, `config`, `option`, `list`
//! (or their one-letter forms `p`, `c`, `o`, `l`), several commands per line separated by
//! `;`, `#` comments (also after a value), words made of unquoted, `'single'` and
//! `"double"` quoted parts glued together, a backslash escaping the next character outside
//! single quotes, a backslash at the end of a line joining the next line, and quoted values
//! that span lines. Like `uci` (strict mode), it refuses extra arguments, option names with
//! characters other than letters, digits and `_`, and a named section redefined with a
//! different type. Semantics as in libuci: a repeated `option` replaces the earlier value,
//! `list` appends (turning an earlier `option` of that name into a list), and a named
//! section given twice is one section.

use std::fmt;

/// A parsed UCI package.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UciPackage {
    /// The sections in file order.
    pub sections: Vec<UciSection>,
}

/// One `config TYPE ['NAME']` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UciSection {
    /// The section type (`gateway`, `uplink`).
    pub kind: String,
    /// The name, or `None` for an anonymous section.
    pub name: Option<String>,
    /// Line of the `config` statement.
    pub line: usize,
    /// Options in the order they were first set.
    pub options: Vec<UciOption>,
}

/// One option or list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UciOption {
    /// Option name.
    pub name: String,
    /// Its value.
    pub value: UciValue,
    /// Line of the statement that last set it.
    pub line: usize,
}

/// The value of an option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UciValue {
    /// `option name 'value'`.
    Single(String),
    /// `list name 'a'` / `list name 'b'`.
    List(Vec<String>),
}

impl UciSection {
    /// How this section is named in messages: `main` or `@uplink[1]` (as `uci show` does).
    pub fn label(&self, index_of_kind: usize) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("@{}[{index_of_kind}]", self.kind),
        }
    }

    /// The option `name`, if set.
    pub fn get(&self, name: &str) -> Option<&UciOption> {
        self.options.iter().find(|o| o.name == name)
    }
}

/// A syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UciError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong (libuci's wording where it has one).
    pub reason: String,
}

impl fmt::Display for UciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for UciError {}

/// C's `isspace` on one byte.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// A libuci-like line buffer: commands read from `buf`, and a value that continues past
/// the end of the buffer pulls the next line in at the current position.
struct Lexer<'a> {
    lines: std::str::SplitInclusive<'a, char>,
    buf: Vec<u8>,
    pos: usize,
    /// Number of lines read so far (the line `buf`'s last part came from).
    line: usize,
}

type Res<T> = Result<T, String>;

impl<'a> Lexer<'a> {
    /// Replaces everything from `offset` on with the next line of the file (with its
    /// newline). Returns false at the end of the file.
    fn getln(&mut self, offset: usize) -> bool {
        self.buf.truncate(offset);
        match self.lines.next() {
            Some(l) => {
                self.buf.extend_from_slice(l.as_bytes());
                self.line += 1;
                true
            }
            None => false,
        }
    }

    fn cur(&self) -> u8 {
        self.buf.get(self.pos).copied().unwrap_or(0)
    }

    fn skip_whitespace(&mut self) {
        while self.cur() != 0 && is_space(self.cur()) {
            self.pos += 1;
        }
    }

    /// After a backslash: true if the next character is to be taken literally, false if
    /// the backslash ended the line (the next line was joined in its place).
    fn backslash(&mut self) -> bool {
        self.pos += 1;
        let at_eol = match self.cur() {
            0 | b'\n' => true,
            b'\r' => self.buf.get(self.pos + 1) == Some(&b'\n') && self.pos + 2 == self.buf.len(),
            _ => false,
        };
        if at_eol {
            self.getln(self.pos);
            return false;
        }
        true
    }

    fn double_quote(&mut self, out: &mut Vec<u8>) -> Res<()> {
        self.pos += 1;
        loop {
            match self.cur() {
                b'"' => {
                    self.pos += 1;
                    return Ok(());
                }
                0 => {
                    self.getln(self.pos);
                    if self.cur() == 0 {
                        return Err("EOF with unterminated \"".into());
                    }
                }
                b'\\' => {
                    if self.backslash() {
                        out.push(self.cur());
                        self.pos += 1;
                    }
                }
                c => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn single_quote(&mut self, out: &mut Vec<u8>) -> Res<()> {
        self.pos += 1;
        loop {
            match self.cur() {
                b'\'' => {
                    self.pos += 1;
                    return Ok(());
                }
                0 => {
                    self.getln(self.pos);
                    if self.cur() == 0 {
                        return Err("EOF with unterminated '".into());
                    }
                }
                c => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// One word, made of quoted and unquoted parts.
    fn word(&mut self, out: &mut Vec<u8>) -> Res<()> {
        let mut consume_separator = true;
        loop {
            match self.cur() {
                b'\'' => self.single_quote(out)?,
                b'"' => self.double_quote(out)?,
                b'#' => {
                    // A comment: the rest of the line is gone.
                    self.buf.truncate(self.pos);
                    break;
                }
                0 => break,
                b';' => {
                    consume_separator = false;
                    break;
                }
                b'\\' => {
                    if self.backslash() {
                        out.push(self.cur());
                        self.pos += 1;
                    }
                }
                c => {
                    out.push(c);
                    self.pos += 1;
                }
            }
            if self.cur() == 0 || is_space(self.cur()) {
                break;
            }
        }
        if self.cur() != 0 && consume_separator {
            self.pos += 1;
        }
        Ok(())
    }

    /// The next argument of a command ("" if there is none).
    fn arg(&mut self, required: bool) -> Res<String> {
        self.skip_whitespace();
        let mut out = Vec::new();
        if self.cur() == b';' {
            self.pos += 1;
        } else {
            self.word(&mut out)?;
        }
        if out.is_empty() && required {
            return Err("insufficient arguments".into());
        }
        // Words are split at ASCII bytes only, so valid UTF-8 stays valid.
        String::from_utf8(out).map_err(|_| "not valid UTF-8".into())
    }

    fn assert_eol(&mut self) -> Res<()> {
        if !self.arg(false)?.is_empty() {
            return Err("too many arguments".into());
        }
        Ok(())
    }

    /// The command word at the start of a statement, or `None` at the end of the line.
    fn command(&mut self) -> Option<String> {
        while matches!(self.cur(), b' ' | b'\t') {
            self.pos += 1;
        }
        let start = self.pos;
        while self.cur() != 0 && !is_space(self.cur()) {
            self.pos += 1;
        }
        let word = String::from_utf8_lossy(&self.buf[start..self.pos]).into_owned();
        if self.cur() != 0 {
            self.pos += 1;
        }
        (!word.is_empty()).then_some(word)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn valid_type(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| (33..=126).contains(&c))
}

/// Parses the text of a UCI file.
pub fn parse(text: &str) -> Result<UciPackage, UciError> {
    if let Some(i) = text.find('\0') {
        return Err(UciError {
            line: text[..i].matches('\n').count() + 1,
            reason: "NUL byte in file".into(),
        });
    }
    let mut lx = Lexer {
        lines: text.split_inclusive('\n'),
        buf: Vec::new(),
        pos: 0,
        line: 0,
    };
    let mut pkg = UciPackage::default();
    let mut current: Option<usize> = None;
    while lx.getln(0) {
        lx.pos = 0;
        lx.skip_whitespace();
        loop {
            let start_line = lx.line;
            let err = |reason: String| UciError {
                line: start_line,
                reason,
            };
            let Some(cmd) = lx.command() else { break };
            if cmd.starts_with('#') {
                break;
            }
            match cmd.as_str() {
                "p" | "package" => {
                    let name = lx.arg(true).map_err(err)?;
                    lx.assert_eol().map_err(err)?;
                    if !name
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
                    {
                        return Err(err("invalid character in name field".into()));
                    }
                }
                "c" | "config" => {
                    let kind = lx.arg(true).map_err(err)?;
                    if !valid_type(&kind) {
                        return Err(err("invalid character in type field".into()));
                    }
                    let name = lx.arg(false).map_err(err)?;
                    if !name.is_empty() && !valid_name(&name) {
                        return Err(err(format!(
                            "invalid character in name field `{name}` (letters, digits and _ only)"
                        )));
                    }
                    lx.assert_eol().map_err(err)?;
                    let existing = (!name.is_empty())
                        .then(|| {
                            pkg.sections
                                .iter()
                                .position(|s| s.name.as_deref() == Some(&name))
                        })
                        .flatten();
                    current = Some(match existing {
                        Some(i) if pkg.sections[i].kind != kind => {
                            return Err(err(format!(
                                "section `{name}` of type `{kind}` overwrites prior section of type `{}`",
                                pkg.sections[i].kind
                            )));
                        }
                        Some(i) => i,
                        None => {
                            pkg.sections.push(UciSection {
                                kind,
                                name: (!name.is_empty()).then_some(name),
                                line: start_line,
                                options: Vec::new(),
                            });
                            pkg.sections.len() - 1
                        }
                    });
                }
                "o" | "option" | "l" | "list" => {
                    let is_list = cmd.starts_with('l');
                    let Some(si) = current else {
                        return Err(err(
                            "option/list command found before the first section".into()
                        ));
                    };
                    let name = lx.arg(true).map_err(err)?;
                    if !valid_name(&name) {
                        return Err(err(format!(
                            "invalid character in name field `{name}` (letters, digits and _ only)"
                        )));
                    }
                    let value = lx.arg(false).map_err(err)?;
                    lx.assert_eol().map_err(err)?;
                    let options = &mut pkg.sections[si].options;
                    match options.iter_mut().find(|o| o.name == name) {
                        Some(o) => {
                            o.line = start_line;
                            match (&mut o.value, is_list) {
                                (UciValue::List(items), true) => items.push(value),
                                (UciValue::Single(old), true) => {
                                    o.value = UciValue::List(vec![std::mem::take(old), value])
                                }
                                (v, false) => *v = UciValue::Single(value),
                            }
                        }
                        None => options.push(UciOption {
                            name,
                            value: if is_list {
                                UciValue::List(vec![value])
                            } else {
                                UciValue::Single(value)
                            },
                            line: start_line,
                        }),
                    }
                }
                _ => return Err(err(format!("invalid command `{cmd}`"))),
            }
        }
    }
    Ok(pkg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(p: &UciPackage, section: usize, name: &str) -> String {
        match &p.sections[section].get(name).unwrap().value {
            UciValue::Single(s) => s.clone(),
            v => panic!("{name} is {v:?}"),
        }
    }

    fn list(p: &UciPackage, section: usize, name: &str) -> Vec<String> {
        match &p.sections[section].get(name).unwrap().value {
            UciValue::List(v) => v.clone(),
            v => panic!("{name} is {v:?}"),
        }
    }

    #[test]
    fn sections_options_lists_and_lines() {
        let p = parse(
            "package linkpool\n\nconfig gateway 'main'\n\toption enabled '1'\n\tlist lan_network 'lan'\n\tlist lan_network guest\n\nconfig uplink\n\toption network wan\n",
        )
        .unwrap();
        assert_eq!(p.sections.len(), 2);
        assert_eq!(p.sections[0].kind, "gateway");
        assert_eq!(p.sections[0].name.as_deref(), Some("main"));
        assert_eq!(p.sections[0].line, 3);
        assert_eq!(single(&p, 0, "enabled"), "1");
        assert_eq!(p.sections[0].get("enabled").unwrap().line, 4);
        assert_eq!(list(&p, 0, "lan_network"), ["lan", "guest"]);
        assert_eq!(p.sections[1].name, None);
        assert_eq!(p.sections[1].label(0), "@uplink[0]");
        assert_eq!(single(&p, 1, "network"), "wan");
    }

    #[test]
    fn quoting_escapes_and_comments() {
        let p = parse(concat!(
            "config t 'n'\n",
            "  option a 'it'\\''s'\n", // the quoting uci export writes
            "  option b \"say \\\"hi\\\" \\\\ \\n\"\n", // escapes in double quotes
            "  option c un\\ quoted\n", // escaped space outside quotes
            "  option d 'x'\"y\"z  # a comment\n", // glued parts, then a comment
            "  option e value#not-a-comment?\n", // '#' in a word ends the line too
            "  option f '# not a comment'\n",
            "  option g ''\n",
            "  option h\n", // no value: empty
            "# config ignored 'x'\n",
            "  option i 'a;b' ; option j k\n", // ';' separates commands
            "\toption k '\u{e9}t\u{e9}'\r\n",  // CRLF line ends and UTF-8
        ))
        .unwrap();
        assert_eq!(single(&p, 0, "a"), "it's");
        assert_eq!(single(&p, 0, "b"), "say \"hi\" \\ n");
        assert_eq!(single(&p, 0, "c"), "un quoted");
        assert_eq!(single(&p, 0, "d"), "xyz");
        assert_eq!(single(&p, 0, "e"), "value");
        assert_eq!(single(&p, 0, "f"), "# not a comment");
        assert_eq!(single(&p, 0, "g"), "");
        assert_eq!(single(&p, 0, "h"), "");
        assert_eq!(single(&p, 0, "i"), "a;b");
        assert_eq!(single(&p, 0, "j"), "k");
        assert_eq!(single(&p, 0, "k"), "\u{e9}t\u{e9}");
        assert_eq!(p.sections.len(), 1);
    }

    #[test]
    fn continuation_and_multi_line_values() {
        let p = parse(concat!(
            "config t 'n'\n",
            "option a one\\\ntwo\n",           // joined word
            "option b \"first \\\nsecond\"\n", // joined inside double quotes
            "option c 'line1\nline2'\n",       // newline kept inside single quotes
            "option \\\nd joined\n",           // continuation between arguments
            "option e last\n",
        ))
        .unwrap();
        assert_eq!(single(&p, 0, "a"), "onetwo");
        assert_eq!(single(&p, 0, "b"), "first second");
        assert_eq!(single(&p, 0, "c"), "line1\nline2");
        assert_eq!(single(&p, 0, "d"), "joined");
        assert_eq!(p.sections[0].get("e").unwrap().line, 10);
    }

    #[test]
    fn one_letter_commands_merging_and_overrides() {
        let p = parse(concat!(
            "c gateway main\n",
            "o x 1\n",
            "o x 2\n",
            "l y a\n",
            "o z s\n",
            "l z t\n",
            "c uplink\n",
            "c gateway main\n",
            "o w 3\n",
        ))
        .unwrap();
        assert_eq!(
            p.sections.len(),
            2,
            "a named section given twice is one section"
        );
        assert_eq!(single(&p, 0, "x"), "2");
        assert_eq!(p.sections[0].get("x").unwrap().line, 3);
        assert_eq!(list(&p, 0, "y"), ["a"]);
        assert_eq!(list(&p, 0, "z"), ["s", "t"]);
        assert_eq!(single(&p, 0, "w"), "3");
    }

    #[test]
    fn errors_carry_the_line_and_libuci_wording() {
        let cases = [
            (
                "config t 'n'\noption a 'open\n",
                2,
                "EOF with unterminated '",
            ),
            ("config t\noption a \"open\n", 2, "EOF with unterminated \""),
            (
                "option a b\n",
                1,
                "option/list command found before the first section",
            ),
            ("\n\nconfig t 'n' extra\n", 3, "too many arguments"),
            ("config t 'n'\n  option a b c\n", 2, "too many arguments"),
            ("config t 'n'\n  set a b\n", 2, "invalid command `set`"),
            ("config\n", 1, "insufficient arguments"),
            ("config t 'n'\noption\n", 2, "insufficient arguments"),
            (
                "config t 'bad-name'\n",
                1,
                "invalid character in name field",
            ),
            (
                "config t 'n'\noption 'a.b' c\n",
                2,
                "invalid character in name field",
            ),
            (
                "config a 'n'\nconfig b 'n'\n",
                2,
                "overwrites prior section",
            ),
            ("config t 'n'\n\0", 2, "NUL"),
        ];
        for (text, line, reason) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.reason.contains(reason), "{text:?}: {e}");
        }
    }
}
