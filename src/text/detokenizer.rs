//! Incremental detokenization and stop strings, run by each request's task on its deltas.
//!
//! `IncrementalDetokenizer` decodes a window `ids[prefix_offset..]` and emits only what extends
//! the text decoded from `ids[prefix_offset..read_offset]`. A window whose text ends in U+FFFD
//! (a multi-byte character cut between tokens) is held back until the next token completes it,
//! so no broken character is ever emitted and nothing is held longer than that.
//!
//! `StopStringMatcher` holds back only the longest tail that could still start a stop string;
//! on a match it returns the text before the stop string, which itself is never emitted.

use super::error::TextError;
use super::tokenizer::TextCodec;

#[derive(Debug, Default)]
pub struct IncrementalDetokenizer {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    skip_special: bool,
}

impl IncrementalDetokenizer {
    pub fn new(skip_special: bool) -> Self {
        Self {
            skip_special,
            ..Default::default()
        }
    }

    /// Adds tokens; returns the text they complete (possibly empty).
    pub fn push(&mut self, codec: &TextCodec, new_ids: &[u32]) -> Result<String, TextError> {
        self.ids.extend_from_slice(new_ids);
        let prefix = codec.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special,
        )?;
        let full = codec.decode(&self.ids[self.prefix_offset..], self.skip_special)?;
        if full.len() <= prefix.len() || full.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let Some(delta) = full.get(prefix.len()..) else {
            // The window re-decoded differently at the boundary; wait for more tokens.
            return Ok(String::new());
        };
        let delta = delta.to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(delta)
    }

    /// Text still held back at the end of the sequence (a trailing incomplete character).
    pub fn flush(&mut self, codec: &TextCodec) -> Result<String, TextError> {
        let prefix = codec.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special,
        )?;
        let full = codec.decode(&self.ids[self.prefix_offset..], self.skip_special)?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(full.get(prefix.len()..).unwrap_or_default().to_string())
    }
}

/// Result of feeding text to a `StopStringMatcher`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopCheck {
    /// Text safe to send now.
    pub text: String,
    /// Index of the stop string that matched; generation ends.
    pub stopped: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct StopStringMatcher {
    stops: Vec<String>,
    pending: String,
    /// Send the matched stop string too (vLLM's `include_stop_str_in_output`).
    include_stop: bool,
}

impl StopStringMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
            include_stop: false,
        }
    }

    /// The matched stop string ends the text instead of being cut off.
    pub fn including_stop(mut self, include: bool) -> Self {
        self.include_stop = include;
        self
    }

    pub fn push(&mut self, text: &str) -> StopCheck {
        if self.stops.is_empty() {
            return StopCheck {
                text: text.to_string(),
                stopped: None,
            };
        }
        self.pending.push_str(text);
        // Earliest match wins; among matches at one place, the first listed.
        let hit = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.pending.find(s.as_str()).map(|pos| (pos, i)))
            .min();
        if let Some((pos, i)) = hit {
            let end = if self.include_stop {
                pos + self.stops[i].len()
            } else {
                pos
            };
            let text = self.pending[..end].to_string();
            self.pending.clear();
            return StopCheck {
                text,
                stopped: Some(i),
            };
        }
        let hold = self.partial_match_len();
        let cut = self.pending.len() - hold;
        let text = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopCheck {
            text,
            stopped: None,
        }
    }

    /// Bytes at the end of `pending` that are a proper prefix of some stop string.
    fn partial_match_len(&self) -> usize {
        let p = &self.pending;
        let mut best = 0;
        for s in &self.stops {
            let max = (s.len() - 1).min(p.len());
            for n in (best + 1..=max).rev() {
                let start = p.len() - n;
                if p.is_char_boundary(start) && s.starts_with(&p[start..]) {
                    best = n;
                    break;
                }
            }
        }
        best
    }

    /// Text held back when generation ended for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_string_spanning_two_deltas_is_never_emitted() {
        let mut m = StopStringMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("hello E").text, "hello ");
        let c = m.push("NDing");
        assert_eq!(c.text, "");
        assert_eq!(c.stopped, Some(0));
    }

    #[test]
    fn partial_prefix_is_released_when_it_diverges() {
        let mut m = StopStringMatcher::new(vec!["\n\n".into(), "###".into()]);
        assert_eq!(m.push("a\n").text, "a");
        assert_eq!(m.push("b#").text, "\nb");
        assert_eq!(m.push("#").text, "");
        assert_eq!(m.flush(), "##");
    }

    #[test]
    fn earliest_stop_wins() {
        let mut m = StopStringMatcher::new(vec!["world".into(), "lo".into()]);
        let c = m.push("hello world");
        assert_eq!(
            c,
            StopCheck {
                text: "hel".into(),
                stopped: Some(1)
            }
        );
    }

    fn byte_level_codec() -> (TextCodec, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = crate::testing::write_tiny_llama(tmp.path(), 0);
        (TextCodec::from_hf_dir(&dir).unwrap(), tmp)
    }

    #[test]
    fn multibyte_character_split_over_two_tokens_is_held_then_emitted_whole() {
        // The tiny tokenizer has one token per byte: "é" is two tokens.
        let (codec, _tmp) = byte_level_codec();
        let ids = codec.encode("aé!", false).unwrap();
        assert_eq!(ids.len(), 4);
        let mut d = IncrementalDetokenizer::new(true);
        assert_eq!(d.push(&codec, &ids[..1]).unwrap(), "a");
        assert_eq!(
            d.push(&codec, &ids[1..2]).unwrap(),
            "",
            "half a character is held back"
        );
        assert_eq!(d.push(&codec, &ids[2..3]).unwrap(), "é");
        assert_eq!(d.push(&codec, &ids[3..]).unwrap(), "!");
        assert_eq!(d.flush(&codec).unwrap(), "");
    }

    #[test]
    fn trailing_partial_character_is_flushed_at_the_end() {
        let (codec, _tmp) = byte_level_codec();
        let ids = codec.encode("é", false).unwrap();
        let mut d = IncrementalDetokenizer::new(true);
        assert_eq!(d.push(&codec, &ids[..1]).unwrap(), "");
        assert_eq!(d.flush(&codec).unwrap(), "\u{FFFD}");
    }

    #[test]
    fn no_stops_passes_through() {
        let mut m = StopStringMatcher::new(vec![]);
        assert_eq!(m.push("abc").text, "abc");
    }
}
