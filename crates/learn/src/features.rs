//! Prompt features meant to carry over to subjects the router never saw (an embedding mostly
//! tells the subject): length, digits, math symbols, numeric answer choices, question-type cues.
//!
//! Every feature has a fixed, label-free scale (logs, fractions, 0/1), chosen up front, so the
//! same transform applies at training and at run time with nothing to fit or store.

/// Names of [`prompt_features`]' values, in order.
pub const FEATURE_NAMES: [&str; 9] = [
    "ln_chars",
    "ln_question_chars",
    "ln_choice_chars",
    "digit_fraction",
    "math_symbol_fraction",
    "numeric_choice_fraction",
    "negation_cue",
    "statement_pair",
    "lines",
];

/// The question part of a multiple-choice prompt: the text before the first "\nA." line.
fn split_choices(prompt: &str) -> (&str, &str) {
    match prompt.find("\nA.") {
        Some(i) => (&prompt[..i], &prompt[i..]),
        None => (prompt, ""),
    }
}

fn ln_len(s: &str) -> f32 {
    ((1 + s.chars().count()) as f32).ln() / 8.0
}

/// The features of one prompt (see [`FEATURE_NAMES`]).
pub fn prompt_features(prompt: &str) -> Vec<f32> {
    let (question, choices) = split_choices(prompt);
    let chars = prompt.chars().count().max(1) as f32;
    let digits = prompt.chars().filter(char::is_ascii_digit).count() as f32;
    let math = prompt
        .chars()
        .filter(|c| "=+^*/<>()[]{}|√∫∑π".contains(*c))
        .count() as f32;
    let choice_lines: Vec<&str> = choices
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let mut it = l.chars();
            match (it.next(), it.next()) {
                (Some(c), Some('.')) if c.is_ascii_uppercase() => Some(l[2..].trim()),
                _ => None,
            }
        })
        .collect();
    let numeric = choice_lines
        .iter()
        .filter(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_digit() || " .,-−/%$×^()e".contains(ch))
                && c.chars().any(|ch| ch.is_ascii_digit())
        })
        .count() as f32;
    let negation = ["NOT", "EXCEPT", "LEAST", "FALSE"].iter().any(|w| {
        question
            .split(|c: char| !c.is_alphanumeric())
            .any(|t| t == *w)
    });
    vec![
        ln_len(prompt),
        ln_len(question),
        ln_len(choices),
        digits / chars,
        math / chars,
        numeric / choice_lines.len().max(1) as f32,
        f32::from(u8::from(negation)),
        f32::from(u8::from(question.contains("Statement 1"))),
        (prompt.lines().count() as f32).ln_1p() / 4.0,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_multiple_choice_prompt() {
        let p = "Which of these is NOT prime?\nA. 2\nB. 3\nC. 4\nD. 5\nAnswer:";
        let f = prompt_features(p);
        assert_eq!(f.len(), FEATURE_NAMES.len());
        assert_eq!(f[5], 1.0, "all four choices are numbers");
        assert_eq!(f[6], 1.0, "NOT is a negation cue");
        assert_eq!(f[7], 0.0);
        assert!(f[1] < f[0] && f[2] < f[0]);
    }

    #[test]
    fn a_plain_prompt_has_no_choices() {
        let f = prompt_features("Tell me about the history of Rome.");
        assert_eq!(f[2], (1f32).ln() / 8.0);
        assert_eq!(f[5], 0.0);
        assert_eq!(f[3], 0.0);
    }
}
