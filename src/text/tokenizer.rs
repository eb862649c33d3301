//! GPT-1's BPE tokenizer: the original vocabulary files (or their HF names), BPE with the
//! `</w>` end-of-word suffix through the HF `tokenizers` crate, ids, and decoding.
//!
//! Mode `hf` is transformers' `OpenAIGPTTokenizer` of today: BERT normalizer (clean text,
//! CJK characters split, lowercase, accents stripped), BERT pre-tokenizer (whitespace and
//! punctuation), BPE; pieces outside the vocabulary become id 0, as transformers gives them.

use super::original::{OriginalBpe, Spacy, fix_text, text_standardize};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

/// The fine-tuning tokens, appended after the vocabulary in the original code's order.
pub const SPECIAL_TOKENS: [&str; 3] = ["_start_", "_delimiter_", "_classify_"];
/// transformers' unknown-token string; unknown pieces get id [`UNK_ID`].
pub const UNK: &str = "<unk>";
pub const UNK_ID: u32 = 0;
const SUFFIX: &str = "</w>";

/// The two file-name pairs a tokenizer directory may hold.
pub const FILE_PAIRS: [(&str, &str); 2] =
    [("vocab.json", "merges.txt"), ("encoder_bpe_40000.json", "vocab_40000.bpe")];

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The original GPT-1 pipeline: ftfy, `text_standardize`, spaCy's English tokenizer,
    /// lowercase, BPE (see [`super::original`]).
    Original,
    /// transformers' `OpenAIGPTTokenizer` (BERT normalizer and pre-tokenizer).
    Hf,
}

/// Written beside the vocabulary by [`Tokenizer::save`]: the mode it was made for.
pub const CONFIG_FILE: &str = "tokenizer_config.json";

/// The most merges `Tokenizer::train` learns (25 × GPT-1's 40,000).
pub const MAX_MERGES: usize = 1_000_000;

/// The size of GPT-1's own BPE vocabulary (`encoder_bpe_40000.json`).
pub const GPT1_BPE_VOCAB: usize = 40_478;

/// GPT-1's BPE vocabulary plus `_start_`, `_delimiter_`, `_classify_`: the model's vocabulary.
pub const GPT1_VOCAB: usize = GPT1_BPE_VOCAB + 3;

impl Mode {
    /// The default for a vocabulary: `original` for GPT-1's own (which that pipeline made),
    /// `hf` for any other (what `tokenizer train` learns with).
    pub fn default_for(bpe_vocab_size: usize) -> Mode {
        if bpe_vocab_size == GPT1_BPE_VOCAB { Mode::Original } else { Mode::Hf }
    }
}

/// A loaded BPE vocabulary with its encoding pipeline.
pub struct Tokenizer {
    hf: HfTokenizer,
    /// id → token string (BPE vocabulary, then the special tokens).
    tokens: Vec<String>,
    /// Merge rules in priority order, kept to write the files back.
    merges: Vec<(String, String)>,
    pub mode: Mode,
    original: Option<(Spacy, OriginalBpe)>,
}

fn read(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::invalid(
            path,
            format!(
                "not UTF-8 at byte {}; expected a BPE vocabulary file",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    Ok(text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text))
}

/// Parses a merges file (`#version` header optional, one `left right` pair per line).
pub fn parse_merges(path: &Path, text: &str) -> Result<Vec<(String, String)>> {
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || (i == 0 && line.starts_with("#version")) {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                merges.push((a.to_string(), b.to_string()))
            }
            _ => {
                return Err(Error::invalid(
                    path,
                    format!(
                        "line {}: {line:?} is not a merge (two symbols separated by one space)",
                        i + 1
                    ),
                ));
            }
        }
    }
    Ok(merges)
}

/// GPT-1's own BPE files (MIT, from the paper's code release), built into the binary.
const GPT1_ENCODER_JSON: &str = include_str!("../../assets/gpt1-bpe/encoder_bpe_40000.json");
const GPT1_MERGES: &str = include_str!("../../assets/gpt1-bpe/vocab_40000.bpe");

impl Tokenizer {
    /// GPT-1's tokenizer from the built-in files (`assets/gpt1-bpe/`): 40,478 BPE tokens and
    /// 40,000 merges, the three fine-tuning tokens appended, mode `original` unless `mode` says.
    pub fn gpt1(mode: impl Into<Option<Mode>>) -> Result<Self> {
        let vp = Path::new("<built-in>/encoder_bpe_40000.json");
        let vocab: HashMap<String, u32> = serde_json::from_str(GPT1_ENCODER_JSON)
            .map_err(|e| Error::invalid(vp, format!("not JSON ({e})")))?;
        let merges = parse_merges(Path::new("<built-in>/vocab_40000.bpe"), GPT1_MERGES)?;
        let mode = mode.into().unwrap_or(Mode::default_for(vocab.len()));
        Self::from_parts(vocab, merges, mode).map_err(|m| Error::invalid(vp, m))
    }

    /// The tokenizer of `dir` when it holds vocabulary files, else GPT-1's built-in one when
    /// `vocab_size` is GPT-1's (40,478, or 40,481 with the special tokens) or unknown.
    pub fn load_or_gpt1(
        dir: Option<&Path>,
        vocab_size: Option<usize>,
        mode: Option<Mode>,
    ) -> Result<Self> {
        if let Some(d) = dir
            && FILE_PAIRS.iter().any(|(v, m)| d.join(v).exists() && d.join(m).exists())
        {
            return Self::load(d, mode);
        }
        match vocab_size {
            None | Some(GPT1_BPE_VOCAB) | Some(GPT1_VOCAB) => Self::gpt1(mode),
            Some(v) => Err(Error::invalid(
                dir.unwrap_or(Path::new(".")),
                format!(
                    "no BPE vocabulary here, and the model's {v} tokens are not GPT-1's built-in vocabulary \
                     ({GPT1_BPE_VOCAB} + 3): pass --tokenizer DIR"
                ),
            )),
        }
    }

    /// Loads `DIR/vocab.json` + `DIR/merges.txt`, or the original `encoder_bpe_40000.json` +
    /// `vocab_40000.bpe`; `mode` `None` picks [`Mode::default_for`] the vocabulary.
    pub fn load(dir: &Path, mode: impl Into<Option<Mode>>) -> Result<Self> {
        let mode = mode.into();
        let Some((v, m)) =
            FILE_PAIRS.iter().find(|(v, m)| dir.join(v).exists() && dir.join(m).exists())
        else {
            return Err(Error::invalid(
                dir,
                "no BPE vocabulary here: expected vocab.json + merges.txt, or encoder_bpe_40000.json + vocab_40000.bpe",
            ));
        };
        let (vp, mp) = (dir.join(v), dir.join(m));
        let vocab: HashMap<String, u32> = serde_json::from_str(&read(&vp)?)
            .map_err(|e| Error::invalid(&vp, format!("not a token → id JSON object ({e})")))?;
        let merges = parse_merges(&mp, &read(&mp)?)?;
        let saved = dir.join(CONFIG_FILE);
        let saved_mode = if saved.exists() {
            let v: serde_json::Value = serde_json::from_str(&read(&saved)?)
                .map_err(|e| Error::invalid(&saved, format!("not JSON ({e})")))?;
            Some(serde_json::from_value::<Mode>(v["mode"].clone()).map_err(|e| {
                Error::invalid(&saved, format!("\"mode\" must be \"original\" or \"hf\" ({e})"))
            })?)
        } else {
            None
        };
        let mode = mode.or(saved_mode).unwrap_or(Mode::default_for(vocab.len()));
        Self::from_parts(vocab, merges, mode).map_err(|m| Error::invalid(&vp, m))
    }

    /// Builds from a vocabulary (ids must be 0..n, each once) and merges.
    pub fn from_parts(
        vocab: HashMap<String, u32>,
        merges: Vec<(String, String)>,
        mode: Mode,
    ) -> std::result::Result<Self, String> {
        let n = vocab.len();
        let mut tokens = vec![String::new(); n];
        let mut seen = vec![false; n];
        for (t, &id) in &vocab {
            let i = id as usize;
            if i >= n || seen[i] {
                return Err(format!(
                    "ids must run from 0 to {} once each; {t:?} has id {id}",
                    n - 1
                ));
            }
            seen[i] = true;
            tokens[i] = t.clone();
        }
        for (a, b) in &merges {
            if !vocab.contains_key(&format!("{a}{b}")) {
                return Err(format!(
                    "merge {a:?} {b:?} makes {:?}, which the vocabulary lacks",
                    format!("{a}{b}")
                ));
            }
        }
        let mut model_vocab: tokenizers::models::bpe::Vocab =
            vocab.iter().map(|(k, v)| (k.clone(), *v)).collect();
        model_vocab.entry(UNK.to_string()).or_insert(UNK_ID);
        let bpe = BPE::builder()
            .vocab_and_merges(model_vocab, merges.clone())
            .unk_token(UNK.to_string())
            .end_of_word_suffix(SUFFIX.to_string())
            .build()
            .map_err(|e| format!("building BPE: {e}"))?;
        let mut hf = HfTokenizer::new(bpe);
        hf.with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
            .map_err(|e| format!("normalizer: {e}"))?;
        hf.with_pre_tokenizer(Some(BertPreTokenizer));
        hf.add_special_tokens([AddedToken::from(UNK, true)])
            .map_err(|e| format!("special tokens: {e}"))?;
        tokens.extend(SPECIAL_TOKENS.iter().map(|s| s.to_string()));
        let original =
            (mode == Mode::Original).then(|| (Spacy::english(), OriginalBpe::new(vocab, &merges)));
        Ok(Tokenizer { hf, tokens, merges, mode, original })
    }

    /// Learns `merges` BPE merges from text files (each line a text) with `mode`'s
    /// normalization and pre-tokenization (for `original`: ftfy, `text_standardize`, spaCy's
    /// words, lowercased); the vocabulary is the initial symbols (characters, and
    /// characters ending a word with `</w>`) plus the result of each merge.
    pub fn train(files: &[PathBuf], merges: usize, mode: Mode) -> Result<Self> {
        use tokenizers::models::TrainerWrapper;
        use tokenizers::models::bpe::BpeTrainerBuilder;
        for f in files {
            if !f.is_file() {
                return Err(Error::invalid(f, "no such file"));
            }
        }
        // Bounded before the trainer sizes its tables by it (4e9 asked for 283 GB).
        if merges == 0 || merges > MAX_MERGES {
            return Err(Error::setting(
                "merges",
                format!("{merges} must be in 1..={MAX_MERGES} (GPT-1 learned 40,000)"),
            ));
        }
        // Ask for more than enough, then keep the first `merges` (BPE training is greedy, so
        // they are exactly what a run stopping at `merges` would learn).
        let trainer = BpeTrainerBuilder::new()
            .vocab_size(merges + 20_000)
            .min_frequency(2)
            .end_of_word_suffix(SUFFIX.to_string())
            .show_progress(false)
            .build();
        let json = if mode == Mode::Original {
            use std::io::BufRead;
            use tokenizers::Trainer;
            let mut trainer = trainer;
            let spacy = Spacy::english();
            let mut lines = Vec::new();
            for f in files {
                let file = std::fs::File::open(f).map_err(|e| Error::io(f, e))?;
                for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
                    // A line that is not UTF-8 (or a read error) stops with its place, instead
                    // of silently ending the file's text there.
                    lines
                        .push(line.map_err(|e| Error::invalid(f, format!("line {}: {e}", i + 1)))?);
                }
            }
            trainer
                .feed(lines.iter(), |line| {
                    let clean = text_standardize(&fix_text(line));
                    Ok(spacy.tokenize(&clean).iter().map(|t| t.to_lowercase()).collect())
                })
                .map_err(|e| Error::Tokenizer(format!("training BPE: {e}")))?;
            let mut model = BPE::builder()
                .end_of_word_suffix(SUFFIX.to_string())
                .build()
                .map_err(|e| Error::Tokenizer(format!("BPE: {e}")))?;
            trainer
                .train(&mut model)
                .map_err(|e| Error::Tokenizer(format!("training BPE: {e}")))?;
            serde_json::to_value(&model).map_err(|e| Error::Tokenizer(format!("BPE: {e}")))?
        } else {
            let mut trainer = TrainerWrapper::BpeTrainer(trainer);
            let model = BPE::builder()
                .end_of_word_suffix(SUFFIX.to_string())
                .build()
                .map_err(|e| Error::Tokenizer(format!("BPE: {e}")))?;
            let mut hf = HfTokenizer::new(model);
            hf.with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
                .map_err(|e| Error::Tokenizer(format!("normalizer: {e}")))?;
            hf.with_pre_tokenizer(Some(BertPreTokenizer));
            let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
            hf.train_from_files(&mut trainer, names)
                .map_err(|e| Error::Tokenizer(format!("training BPE: {e}")))?;
            serde_json::to_value(hf.get_model())
                .map_err(|e| Error::Tokenizer(format!("BPE: {e}")))?
        };
        let learned: Vec<(String, String)> = json["merges"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| match m {
                        serde_json::Value::Array(p) => {
                            Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string()))
                        }
                        serde_json::Value::String(s) => {
                            s.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string()))
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if json["vocab"].as_object().is_none_or(|o| o.is_empty()) {
            let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
            return Err(Error::invalid(
                names.join(", "),
                "no text to learn a vocabulary from (empty input): a tokenizer of 0 symbols would \
                 encode everything as one id",
            ));
        }
        let kept: Vec<(String, String)> = learned.into_iter().take(merges).collect();
        let results: std::collections::HashSet<String> =
            kept.iter().map(|(a, b)| format!("{a}{b}")).collect();
        // Initial symbols: every trained token that no merge produced.
        let mut initial: Vec<(u32, String)> = json["vocab"]
            .as_object()
            .map(|o| {
                o.iter().filter_map(|(t, id)| Some((id.as_u64()? as u32, t.clone()))).collect()
            })
            .unwrap_or_default();
        let all_results: std::collections::HashSet<String> = json["merges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| match m {
                serde_json::Value::Array(p) => {
                    Some(format!("{}{}", p[0].as_str()?, p[1].as_str()?))
                }
                serde_json::Value::String(s) => Some(s.replacen(' ', "", 1)),
                _ => None,
            })
            .collect();
        initial.retain(|(_, t)| !all_results.contains(t));
        // The trainer numbers its alphabet in hash order; sort by symbol for stable ids.
        initial.sort_by(|a, b| a.1.cmp(&b.1));
        let mut vocab: HashMap<String, u32> = HashMap::new();
        for (_, t) in initial {
            let n = vocab.len() as u32;
            vocab.entry(t).or_insert(n);
        }
        for (a, b) in &kept {
            let t = format!("{a}{b}");
            let n = vocab.len() as u32;
            vocab.entry(t).or_insert(n);
        }
        debug_assert!(results.iter().all(|t| vocab.contains_key(t)));
        Self::from_parts(vocab, kept, mode).map_err(Error::Vocab)
    }

    /// The number of merge rules.
    pub fn num_merges(&self) -> usize {
        self.merges.len()
    }

    /// Vocabulary size including the three special tokens.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The BPE vocabulary alone (what the original files hold).
    pub fn bpe_vocab_size(&self) -> usize {
        self.tokens.len() - SPECIAL_TOKENS.len()
    }

    /// The id of `_start_`, `_delimiter_` or `_classify_`.
    pub fn special_id(&self, name: &str) -> Option<u32> {
        SPECIAL_TOKENS.iter().position(|s| *s == name).map(|i| (self.bpe_vocab_size() + i) as u32)
    }

    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Stage 1, normalize: the text the words are cut from (ftfy + `text_standardize` in
    /// `original` mode; the BERT normalizer in `hf` mode).
    pub fn normalize(&self, text: &str) -> Result<String> {
        if self.original.is_some() {
            return Ok(text_standardize(&fix_text(text)));
        }
        use tokenizers::{NormalizedString, Normalizer};
        let mut n = NormalizedString::from(text);
        BertNormalizer::new(true, true, None, true)
            .normalize(&mut n)
            .map_err(|e| Error::Tokenizer(format!("normalizing: {e}")))?;
        Ok(n.get().to_string())
    }

    /// Stage 2, pre-tokenize: the words BPE sees (lowercased spaCy tokens in `original` mode;
    /// BERT's whitespace/punctuation split in `hf` mode).
    pub fn words(&self, text: &str) -> Result<Vec<String>> {
        let norm = self.normalize(text)?;
        if let Some((spacy, _)) = &self.original {
            return Ok(spacy.tokenize(&norm).iter().map(|t| t.to_lowercase()).collect());
        }
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let mut p = PreTokenizedString::from(norm.as_str());
        BertPreTokenizer
            .pre_tokenize(&mut p)
            .map_err(|e| Error::Tokenizer(format!("pre-tokenizing: {e}")))?;
        Ok(p.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(w, _, _)| w.to_string())
            .collect())
    }

    /// Token ids of `text`: normalize, pre-tokenize, BPE, ids in one pass.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if let Some((spacy, bpe)) = &self.original {
            let clean = text_standardize(&fix_text(text));
            let mut ids = Vec::with_capacity(clean.len() / 3);
            for t in spacy.tokenize(&clean) {
                bpe.ids(t, &mut ids);
            }
            return Ok(ids);
        }
        let enc = self
            .hf
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(format!("tokenizing: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids of a whole document as `prepare` makes them: paragraph by paragraph (text between
    /// blank lines, CRLF read as LF, a leading byte-order mark dropped), concatenated.
    pub fn encode_document(&self, text: &str) -> Result<Vec<u32>> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text).replace("\r\n", "\n");
        let mut ids = Vec::new();
        for p in text.split("\n\n") {
            ids.extend(self.encode(p)?);
        }
        Ok(ids)
    }

    /// Text of `ids`: tokens joined, each `</w>` becoming a space (transformers' BPE decoder).
    /// Fails on an id outside the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut out = String::new();
        for (k, &id) in ids.iter().enumerate() {
            let t = self.token(id).ok_or_else(|| {
                Error::Vocab(format!(
                    "id {id} (position {k}) is outside the vocabulary of {} tokens",
                    self.tokens.len()
                ))
            })?;
            match t.strip_suffix(SUFFIX) {
                Some(stem) => {
                    out.push_str(stem);
                    if k + 1 < ids.len() {
                        out.push(' ');
                    }
                }
                None => out.push_str(t),
            }
        }
        Ok(out)
    }

    /// Refuses a `dir` to [`Tokenizer::save`] into that holds files gpt1 did not write (a
    /// transformers tokenizer's `vocab.json` would be replaced), unless `force`: it may be new,
    /// empty, or an earlier save (those three files, the config gpt1's).
    pub fn check_save_dir(dir: &Path, force: bool) -> Result<()> {
        const SAVED: [&str; 3] = ["vocab.json", "merges.txt", CONFIG_FILE];
        // An earlier save's files are its own when its config is gpt1's (a transformers
        // tokenizer_config.json has no "mode"); anything else is the user's, refused by name.
        let earlier = std::fs::read(dir.join(CONFIG_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v.get("mode").is_some() && v.get("unk_id").is_some());
        let own = |n: &str| n.contains(".tmp") || (earlier && SAVED.contains(&n));
        crate::io::check_out_dir(dir, own, Some(force))
    }

    /// Writes `vocab.json` and `merges.txt` (HF names; the special tokens are not in them).
    pub fn save(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        use crate::io::write_atomic;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let vocab: serde_json::Map<String, serde_json::Value> = self.tokens
            [..self.bpe_vocab_size()]
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), serde_json::Value::from(i)))
            .collect();
        let vp = dir.join("vocab.json");
        write_atomic(&vp, serde_json::to_string(&vocab).expect("json").as_bytes())?;
        let mut m = String::from("#version: 0.2\n");
        for (a, b) in &self.merges {
            m.push_str(&format!("{a} {b}\n"));
        }
        let mp = dir.join("merges.txt");
        write_atomic(&mp, m.as_bytes())?;
        let cp = dir.join(CONFIG_FILE);
        let cfg = serde_json::json!({"mode": self.mode, "special_tokens": SPECIAL_TOKENS, "unk_id": UNK_ID});
        write_atomic(&cp, serde_json::to_string_pretty(&cfg).expect("json").as_bytes())?;
        Ok(vec![vp, mp, cp])
    }
}
