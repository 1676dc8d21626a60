//! Text in and out of the model: the tokenizer the GGUF carries, the ChatML prompt, and
//! incremental decoding of generated tokens to UTF-8 with stop strings.
//!
//! GGUF tokenizer keys follow the GGUF specification
//! (<https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>, "tokenizer.ggml.*").

use candle_core::quantized::{gguf_file, tokenizer::TokenizerFromGguf};
use switchyard_api::openai::Message;
use tokenizers::{
    pre_tokenizers::{byte_level::ByteLevel, digits::Digits, sequence::Sequence},
    Tokenizer,
};

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: u32 = 3;
const TOKEN_TYPE_USER_DEFINED: u32 = 4;

/// Control tokens that end a turn in the chat formats we render, beside the GGUF's eos id
/// (llama.cpp treats the same names as end-of-generation).
const END_OF_TURN_NAMES: &[&str] = &["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"];

/// The tokenizer and chat format of one model.
pub struct TextCodec {
    tokenizer: Tokenizer,
    /// Each token's bytes; empty for control tokens, which are never shown as text.
    token_bytes: Vec<Vec<u8>>,
    /// Token ids that end generation.
    pub end_ids: Vec<u32>,
    bos: Option<u32>,
    /// What the template inserts when the conversation has no system message.
    default_system: Option<String>,
}

impl TextCodec {
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self, String> {
        let mut tokenizer = Tokenizer::from_gguf(ct)
            .map_err(|e| format!("cannot build the tokenizer from the GGUF: {e}"))?;
        let pre = meta_str(ct, "tokenizer.ggml.pre").unwrap_or_default();
        // SmolLM2's tokenizer.json (and llama.cpp's `smollm` pre-tokenizer) splits digits one by
        // one before the GPT-2 byte-level split, without a prefix space; candle's generic
        // pipeline does neither.
        if pre == "smollm" || pre == "gpt2" {
            let byte_level = ByteLevel::new(false, true, true);
            let pre_tok = if pre == "smollm" {
                Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
            } else {
                byte_level.into()
            };
            tokenizer.with_pre_tokenizer(Some::<tokenizers::PreTokenizerWrapper>(pre_tok));
        }
        let tokens: Vec<String> = match ct.metadata.get("tokenizer.ggml.tokens") {
            Some(gguf_file::Value::Array(a)) => a
                .iter()
                .map(|v| v.to_string().cloned().unwrap_or_default())
                .collect(),
            _ => return Err("GGUF has no tokenizer.ggml.tokens".into()),
        };
        let types: Vec<u32> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(gguf_file::Value::Array(a)) => a
                .iter()
                .map(|v| v.to_i32().map(|x| x as u32).unwrap_or(1))
                .collect(),
            _ => vec![1; tokens.len()],
        };
        let unbyte = byte_decoder();
        let token_bytes = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| match types.get(i).copied().unwrap_or(1) {
                TOKEN_TYPE_CONTROL => Vec::new(),
                TOKEN_TYPE_USER_DEFINED => t.as_bytes().to_vec(),
                _ => {
                    let mapped: Option<Vec<u8>> = t.chars().map(&unbyte).collect();
                    mapped.unwrap_or_else(|| t.as_bytes().to_vec())
                }
            })
            .collect();
        let eos = meta_u32(ct, "tokenizer.ggml.eos_token_id");
        let mut end_ids: Vec<u32> = eos.into_iter().collect();
        for (i, t) in tokens.iter().enumerate() {
            if END_OF_TURN_NAMES.contains(&t.as_str()) && !end_ids.contains(&(i as u32)) {
                end_ids.push(i as u32);
            }
        }
        let add_bos = matches!(
            ct.metadata.get("tokenizer.ggml.add_bos_token"),
            Some(gguf_file::Value::Bool(true))
        );
        let bos = if add_bos {
            meta_u32(ct, "tokenizer.ggml.bos_token_id")
        } else {
            None
        };
        let template = meta_str(ct, "tokenizer.chat_template");
        if let Some(t) = &template {
            if !t.contains("<|im_start|>") {
                return Err(
                    "the GGUF's chat template is not ChatML; only ChatML models are supported"
                        .into(),
                );
            }
        }
        Ok(TextCodec {
            tokenizer,
            token_bytes,
            end_ids,
            bos,
            default_system: template.as_deref().and_then(default_system_prompt),
        })
    }

    /// Token ids for text, reading special-token markers (`<|im_start|>`) as single tokens,
    /// as llama.cpp does for a rendered chat prompt.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let enc = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| format!("tokenizer failed: {e}"))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        ids.extend(self.bos);
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The bytes a token stands for (empty for control tokens).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The prompt for a conversation, rendered as the GGUF's ChatML template does
    /// (`<|im_start|>{role}\n{content}<|im_end|>\n` per message, then `<|im_start|>assistant\n`),
    /// written out here rather than run through a Jinja engine. The template's default system
    /// prompt is added when the conversation has no system message, as the template does.
    /// OpenAI's `developer` role is rendered as `system`.
    pub fn render_chat(&self, messages: &[Message]) -> String {
        let mut out = String::new();
        let has_system = messages
            .first()
            .is_some_and(|m| m.role == "system" || m.role == "developer");
        if let (false, Some(sys)) = (has_system, &self.default_system) {
            push_turn(&mut out, "system", sys);
        }
        for m in messages {
            let role = if m.role == "developer" {
                "system"
            } else {
                m.role.as_str()
            };
            let content = m.content.as_ref().map(|c| c.as_text()).unwrap_or_default();
            push_turn(&mut out, role, &content);
        }
        out.push_str("<|im_start|>assistant\n");
        out
    }
}

fn push_turn(out: &mut String, role: &str, content: &str) {
    out.push_str("<|im_start|>");
    out.push_str(role);
    out.push('\n');
    out.push_str(content);
    out.push_str("<|im_end|>\n");
}

/// The system turn a ChatML template adds when the first message is not a system message
/// (SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging Face").
fn default_system_prompt(template: &str) -> Option<String> {
    if !template.contains("!= 'system'") && !template.contains("!= \"system\"") {
        return None;
    }
    let start = template.find("<|im_start|>system\n")? + "<|im_start|>system\n".len();
    let len = template[start..].find("<|im_end|>")?;
    Some(template[start..start + len].to_string())
}

fn meta_str(ct: &gguf_file::Content, key: &str) -> Option<String> {
    ct.metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .cloned()
}

fn meta_u32(ct: &gguf_file::Content, key: &str) -> Option<u32> {
    let v = ct.metadata.get(key)?;
    v.to_u32()
        .ok()
        .or_else(|| v.to_i32().ok().map(|x| x as u32))
}

/// Inverse of GPT-2's `bytes_to_unicode`: byte-level BPE writes each byte as one printable
/// character (printable Latin-1 bytes as themselves, the rest as U+0100 onwards, in order).
fn byte_decoder() -> impl Fn(char) -> Option<u8> {
    let mut table = [None::<u8>; 512];
    let mut next = 256u32;
    for b in 0u32..256 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            b
        } else {
            next += 1;
            next - 1
        };
        table[c as usize] = Some(b as u8);
    }
    move |c: char| table.get(c as usize).copied().flatten()
}

/// Turns generated tokens into text pieces: whole UTF-8 characters only (a character split
/// across tokens waits for its last byte), cut at the first stop string, and holding back any
/// tail that could still become a stop string.
pub struct TextStream {
    stops: Vec<String>,
    pending_bytes: Vec<u8>,
    /// All text produced so far (after the stop cut, when one was found).
    text: String,
    /// How much of `text` has been handed out.
    sent: usize,
    stopped: bool,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> Self {
        TextStream {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending_bytes: Vec::new(),
            text: String::new(),
            sent: 0,
            stopped: false,
        }
    }

    /// Adds a token's bytes; returns the text that is now safe to show, and whether a stop
    /// string was reached (generation should end).
    pub fn push(&mut self, bytes: &[u8]) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.pending_bytes.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending_bytes) {
            Ok(s) => s.len(),
            // An incomplete character at the end waits; an invalid byte in the middle is
            // replaced so the stream never stalls.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => {
                let lossy = String::from_utf8_lossy(&self.pending_bytes).into_owned();
                self.pending_bytes = lossy.into_bytes();
                self.pending_bytes.len()
            }
        };
        let done: Vec<u8> = self.pending_bytes.drain(..valid).collect();
        let search_from = self.sent;
        self.text.push_str(&String::from_utf8_lossy(&done));
        if let Some(cut) = self.first_stop(search_from) {
            self.text.truncate(cut);
            self.stopped = true;
            return (self.take(self.text.len()), true);
        }
        let hold = self.stop_prefix_len();
        (self.take(self.text.len() - hold), false)
    }

    /// Everything not yet handed out (at the end of generation).
    pub fn finish(&mut self) -> String {
        if !self.stopped && !self.pending_bytes.is_empty() {
            let rest = String::from_utf8_lossy(&self.pending_bytes).into_owned();
            self.pending_bytes.clear();
            self.text.push_str(&rest);
        }
        self.take(self.text.len())
    }

    #[cfg(test)]
    fn text(&self) -> &str {
        &self.text
    }

    fn take(&mut self, upto: usize) -> String {
        let upto = upto.max(self.sent);
        let s = self.text[self.sent..upto].to_string();
        self.sent = upto;
        s
    }

    /// Byte offset of the earliest stop string that ends in unsent text.
    fn first_stop(&self, sent: usize) -> Option<usize> {
        let longest = self.stops.iter().map(String::len).max()?;
        let mut from = sent.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        self.stops
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min()
    }

    /// Length of the longest unsent tail of `text` that is a proper prefix of a stop string.
    fn stop_prefix_len(&self) -> usize {
        let unsent = &self.text[self.sent..];
        let mut best = 0;
        for stop in &self.stops {
            for (i, _) in stop.char_indices().skip(1) {
                if i > best && unsent.ends_with(&stop[..i]) {
                    best = i;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_wait_for_their_last_byte() {
        let mut s = TextStream::new(vec![]);
        let euro = "€".as_bytes();
        assert_eq!(s.push(b"a"), ("a".into(), false));
        assert_eq!(s.push(&euro[..1]), ("".into(), false));
        assert_eq!(s.push(&euro[1..]), ("€".into(), false));
        assert_eq!(s.finish(), "");
        assert_eq!(s.text(), "a€");
    }

    #[test]
    fn stop_strings_cut_and_hold_back() {
        let mut s = TextStream::new(vec!["END".into(), "\n\n".into()]);
        assert_eq!(s.push(b"Hello E"), ("Hello ".into(), false));
        assert_eq!(s.push(b"N"), ("".into(), false));
        assert_eq!(s.push(b"X"), ("ENX".into(), false));
        assert_eq!(s.push(b" ok\n"), (" ok".into(), false));
        assert_eq!(s.push(b"\nmore"), ("".into(), true));
        assert_eq!(s.text(), "Hello ENX ok");
        let mut s = TextStream::new(vec!["END".into()]);
        assert_eq!(s.push(b"xxEND and more"), ("xx".into(), true));
    }

    #[test]
    fn byte_decoder_inverts_gpt2_mapping() {
        let d = byte_decoder();
        assert_eq!(d('A'), Some(b'A'));
        assert_eq!(d('Ġ'), Some(b' '));
        assert_eq!(d('Ċ'), Some(b'\n'));
        assert_eq!(d('ÿ'), Some(0xff));
    }

    #[test]
    fn default_system_prompt_is_read_from_the_template() {
        let t = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are X<|im_end|>\n' }}{% endif %}";
        assert_eq!(default_system_prompt(t).as_deref(), Some("You are X"));
        assert_eq!(default_system_prompt("<|im_start|>{{role}}"), None);
    }
}
