//! Built-in word lists for probes and projections.

pub const NAMES: &[&str] = &[
    "colors",
    "numbers",
    "months",
    "days",
    "countries",
    "capitals",
    "animals",
    "emotions",
];

pub fn preset(name: &str) -> Option<Vec<String>> {
    let words: Vec<&str> = match name {
        "colors" => super::color::CSS_COLORS.iter().map(|(n, _)| *n).collect(),
        "numbers" => vec![
            "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
            "eleven", "twelve", "twenty", "thirty", "hundred", "thousand",
        ],
        "months" => vec![
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ],
        "days" => vec![
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        ],
        "countries" => vec![
            "France",
            "Germany",
            "Italy",
            "Spain",
            "Japan",
            "China",
            "India",
            "Brazil",
            "Canada",
            "Egypt",
            "Kenya",
            "Mexico",
            "Russia",
            "Australia",
            "Norway",
            "Peru",
        ],
        "capitals" => vec![
            "Paris",
            "Berlin",
            "Rome",
            "Madrid",
            "Tokyo",
            "Beijing",
            "Delhi",
            "Brasilia",
            "Ottawa",
            "Cairo",
            "Nairobi",
            "Mexico City",
            "Moscow",
            "Canberra",
            "Oslo",
            "Lima",
        ],
        "animals" => vec![
            "dog", "cat", "horse", "cow", "lion", "tiger", "wolf", "fox", "eagle", "sparrow",
            "shark", "whale", "salmon", "snake", "frog", "bee",
        ],
        "emotions" => vec![
            "happy",
            "sad",
            "angry",
            "afraid",
            "surprised",
            "disgusted",
            "calm",
            "excited",
            "bored",
            "proud",
            "ashamed",
            "jealous",
            "grateful",
            "lonely",
        ],
        _ => return None,
    };
    Some(words.into_iter().map(str::to_string).collect())
}

/// A word list from a file: one word or phrase per line; blank lines and `#` comments skipped.
pub fn parse_word_list(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}
