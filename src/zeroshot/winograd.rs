//! Pronoun resolution data: DPR (Rahman & Ng 2012, "DPRD") in its 4-line blocks, and the
//! Winograd Schema Challenge's `WSCollection.xml` (WSC273). Both become [`Schema`]s: a sentence
//! cut around one pronoun, the candidates, the right one.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// One pronoun to resolve: `prefix + pronoun + suffix` is the sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    /// Where it starts: the block's first line (DPR) or the `<schema>` element's line (WSC).
    pub line: usize,
    /// The text before the pronoun, with the space before it.
    pub prefix: String,
    pub pronoun: String,
    /// The text after the pronoun, with its leading space or punctuation.
    pub suffix: String,
    /// The candidates, as written, in label order.
    pub candidates: Vec<String>,
    /// The index of the right candidate.
    pub answer: usize,
}

/// Pronouns read as possessive determiners: the candidate takes `'s` ("his" → "the man's").
/// "her" is left alone (it is as often an object).
const POSSESSIVE: &[&str] = &["his", "its", "their"];

impl Schema {
    /// The whole sentence.
    pub fn sentence(&self) -> String {
        format!("{}{}{}", self.prefix, self.pronoun, self.suffix)
    }

    /// The candidate `k` as it replaces the pronoun: its first letter capitalized when the
    /// pronoun starts the sentence, `'s` added after a possessive pronoun (his, its, their).
    pub fn replacement(&self, k: usize) -> String {
        let c = self.candidates[k].trim();
        let mut out = if self.prefix.trim().is_empty() {
            let mut ch = c.chars();
            ch.next().map(|f| f.to_uppercase().chain(ch).collect()).unwrap_or_default()
        } else {
            c.to_string()
        };
        if POSSESSIVE.contains(&self.pronoun.to_lowercase().as_str()) {
            out.push_str("'s");
        }
        out
    }

    /// Partial scoring's two parts for candidate `k`: the prefix up to and including the
    /// substituted candidate (the condition), and the rest of the sentence (what is scored).
    pub fn substituted(&self, k: usize) -> (String, &str) {
        (format!("{}{}", self.prefix, self.replacement(k)), &self.suffix)
    }
}

/// The byte offset of the first whole-word, ASCII-case-insensitive occurrence of `word` in
/// `text` (no letter or digit on either side).
pub fn find_word(text: &str, word: &str) -> Option<usize> {
    let (t, w) = (text.as_bytes(), word.as_bytes());
    if w.is_empty() || w.len() > t.len() {
        return None;
    }
    let is_word = |c: char| c.is_alphanumeric();
    (0..=t.len() - w.len()).find(|&i| {
        text.is_char_boundary(i)
            && text.is_char_boundary(i + w.len())
            && t[i..i + w.len()].eq_ignore_ascii_case(w)
            && !text[..i].chars().next_back().is_some_and(is_word)
            && !text[i + w.len()..].chars().next().is_some_and(is_word)
    })
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::invalid(path, format!("not UTF-8 at byte {}", e.utf8_error().valid_up_to()))
    })?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(&text).replace("\r\n", "\n"))
}

/// DPR's split file: `DIR/{split}.c.txt` (`train`, `test`), or `data` itself when it is a file.
pub fn dpr_file(data: &Path, split: &str) -> Result<PathBuf> {
    if data.is_file() {
        return Ok(data.to_path_buf());
    }
    if !["train", "test"].contains(&split) {
        return Err(Error::Unknown(format!("unknown split {split:?} for dprd: use train or test")));
    }
    let p = data.join(format!("{split}.c.txt"));
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::MissingSplit {
            path: data.to_path_buf(),
            msg: format!("expected {split}.c.txt (DPR's 4-line blocks)"),
        })
    }
}

/// Reads DPR's blocks: sentence, pronoun, `cand1,cand2`, answer, separated by blank lines.
/// The pronoun is its first whole-word, case-insensitive occurrence in the sentence; the answer
/// is the candidate equal to it, case-insensitively, after trimming. Errors name the file, the
/// block and the line.
pub fn read_dpr(path: &Path) -> Result<Vec<Schema>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    let mut block: Vec<(usize, &str)> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if !line.trim().is_empty() {
            block.push((i + 1, line));
        }
        let end = line.trim().is_empty() || i + 1 == lines.len();
        if end && !block.is_empty() {
            out.push(dpr_block(path, out.len() + 1, &block)?);
            block.clear();
        }
    }
    if out.is_empty() {
        return Err(Error::invalid(path, "no DPR blocks (sentence, pronoun, candidates, answer)"));
    }
    Ok(out)
}

fn dpr_block(path: &Path, n: usize, block: &[(usize, &str)]) -> Result<Schema> {
    let at =
        |line: usize, msg: String| Error::invalid(path, format!("block {n}, line {line}: {msg}"));
    let first = block[0].0;
    if block.len() != 4 {
        return Err(at(
            first,
            format!(
                "{} lines; a block is 4 lines (sentence, pronoun, \"cand1,cand2\", answer) followed by a blank line",
                block.len()
            ),
        ));
    }
    let (sentence, pronoun, cands, answer) =
        (block[0].1.trim(), block[1].1.trim(), block[2].1, block[3].1.trim());
    if sentence.is_empty() {
        return Err(at(block[0].0, "empty sentence".into()));
    }
    if pronoun.is_empty() {
        return Err(at(block[1].0, "empty pronoun".into()));
    }
    let Some(pos) = find_word(sentence, pronoun) else {
        return Err(at(
            block[1].0,
            format!("the pronoun {pronoun:?} is not a word of the sentence {sentence:?}"),
        ));
    };
    let candidates: Vec<String> = cands.split(',').map(|c| c.trim().to_string()).collect();
    if candidates.len() < 2 {
        return Err(at(block[2].0, format!("{cands:?}: expected two candidates, \"cand1,cand2\"")));
    }
    if let Some(k) = candidates.iter().position(String::is_empty) {
        return Err(at(block[2].0, format!("{cands:?}: candidate {} is empty", k + 1)));
    }
    let Some(answer) = candidates.iter().position(|c| c.eq_ignore_ascii_case(answer)) else {
        return Err(at(
            block[3].0,
            format!("the answer {answer:?} is none of the candidates {candidates:?}"),
        ));
    };
    Ok(Schema {
        line: first,
        prefix: sentence[..pos].to_string(),
        pronoun: sentence[pos..pos + pronoun.len()].to_string(),
        suffix: sentence[pos + pronoun.len()..].to_string(),
        candidates,
        answer,
    })
}

/// The WSC file: `data` itself, or `DIR/WSCollection.xml` (else the folder's one `.xml` file).
/// Its one split is `test`.
pub fn wsc_file(data: &Path, split: &str) -> Result<PathBuf> {
    if split != "test" {
        return Err(Error::Unknown(format!(
            "unknown split {split:?} for wsc: its one split is test"
        )));
    }
    if data.is_file() {
        return Ok(data.to_path_buf());
    }
    let p = data.join("WSCollection.xml");
    if p.is_file() {
        return Ok(p);
    }
    let xml: Vec<PathBuf> = std::fs::read_dir(data)
        .map_err(|e| Error::io(data, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    match xml.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Error::MissingSplit {
            path: data.to_path_buf(),
            msg: "expected WSCollection.xml (the Winograd Schema Challenge's collection)".into(),
        }),
    }
}

/// The first child element of `n` called `name`.
fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.is_element() && c.has_tag_name(name))
}

/// Whitespace runs (newlines included) as one space, trimmed.
fn norm(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads `WSCollection.xml`: each `<schema>`'s `<text>` (`<txt1>`, `<pron>`, `<txt2>`),
/// `<answers>` (two or more `<answer>`) and `<correctAnswer>` (a letter, spaces and a trailing
/// `.` allowed). Whitespace inside elements is normalized. Errors name the file and the line.
pub fn read_wsc(path: &Path) -> Result<Vec<Schema>> {
    let text = read_text(path)?;
    let opts = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(&text, opts)
        .map_err(|e| Error::invalid(path, format!("not well-formed XML: {e}")))?;
    let line_of = |n: roxmltree::Node| doc.text_pos_at(n.range().start).row as usize;
    let all_text = |n: roxmltree::Node| {
        norm(&n.descendants().filter(|d| d.is_text()).filter_map(|d| d.text()).collect::<String>())
    };
    let mut out = Vec::new();
    for (k, s) in doc.descendants().filter(|n| n.has_tag_name("schema")).enumerate() {
        let line = line_of(s);
        let at =
            |msg: String| Error::invalid(path, format!("schema {}, line {line}: {msg}", k + 1));
        let t = child(s, "text").ok_or_else(|| at("no <text>".into()))?;
        let part = |name: &str| child(t, name).map(all_text).unwrap_or_default();
        let (txt1, pron, txt2) = (part("txt1"), part("pron"), part("txt2"));
        if pron.is_empty() {
            return Err(at("no pronoun (<pron> missing or empty)".into()));
        }
        if txt1.is_empty() && txt2.is_empty() {
            return Err(at("empty sentence (<txt1> and <txt2> empty)".into()));
        }
        let candidates: Vec<String> = child(s, "answers")
            .map(|a| a.children().filter(|c| c.has_tag_name("answer")).map(all_text).collect())
            .unwrap_or_default();
        if candidates.len() < 2 {
            return Err(at(format!("{} <answer> elements; expected two", candidates.len())));
        }
        if let Some(j) = candidates.iter().position(String::is_empty) {
            return Err(at(format!("<answer> {} is empty", j + 1)));
        }
        let correct = child(s, "correctAnswer").map(all_text).unwrap_or_default();
        let letter = correct.trim_end_matches('.').trim();
        let answer = match letter.as_bytes() {
            [c] if c.is_ascii_alphabetic() => (c.to_ascii_uppercase() - b'A') as usize,
            _ => usize::MAX,
        };
        if answer >= candidates.len() {
            return Err(at(format!(
                "<correctAnswer> {correct:?} names none of the {} answers (A, B, …)",
                candidates.len()
            )));
        }
        let joined = |a: &str| if a.is_empty() { String::new() } else { format!("{a} ") };
        let starts_punct = txt2.starts_with(['.', ',', ';', ':', '!', '?', '\'', '’', ')']);
        out.push(Schema {
            line,
            prefix: joined(&txt1),
            pronoun: pron,
            suffix: if txt2.is_empty() || starts_punct { txt2 } else { format!(" {txt2}") },
            candidates,
            answer,
        });
    }
    if out.is_empty() {
        return Err(Error::invalid(path, "no <schema> elements"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_only_any_case() {
        assert_eq!(find_word("The man said he left", "he"), Some(13));
        assert_eq!(find_word("He said the", "he"), Some(0));
        assert_eq!(find_word("the theme", "he"), None);
        assert_eq!(find_word("café he", "he"), Some(6));
        assert_eq!(find_word("x he's", "he"), Some(2));
        assert_eq!(find_word("", "he"), None);
    }

    #[test]
    fn replacement_capitalizes_at_the_start_and_adds_s_after_possessives() {
        let s = Schema {
            line: 1,
            prefix: String::new(),
            pronoun: "He".into(),
            suffix: " left.".into(),
            candidates: vec!["the man".into(), "Bob".into()],
            answer: 0,
        };
        assert_eq!(s.substituted(0), ("The man".to_string(), " left."));
        let p = Schema { prefix: "I took ".into(), pronoun: "his".into(), ..s };
        assert_eq!(p.replacement(0), "the man's");
    }
}
