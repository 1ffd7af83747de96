//! SDP that does not parse, explained to the client that sent it.
//!
//! str0m's parse error names the place it stopped as a pointer into the text
//! (`PointerOffset(0x7f…)`). Sent as it is, that is no help to the client and tells
//! anyone the server's memory addresses. The place becomes a line number and the line.

use std::fmt::Display;

/// What is wrong with `sdp`, from the parse `error` str0m gave for it.
pub(crate) fn explain(sdp: &str, error: impl Display) -> String {
    let text = error.to_string();
    let mut place = None;
    let mut reasons = Vec::new();
    for part in text.lines() {
        let part = part.trim_start_matches("SDP parse:").trim();
        if let Some(rest) = part.strip_prefix("Parse error at PointerOffset(") {
            place = rest
                .strip_suffix(')')
                .and_then(|hex| hex.strip_prefix("0x"))
                .and_then(|hex| usize::from_str_radix(hex, 16).ok())
                .and_then(|at| at.checked_sub(sdp.as_ptr() as usize))
                .filter(|&offset| offset <= sdp.len() && sdp.is_char_boundary(offset));
        } else if !part.is_empty() && part != "sdp line" {
            reasons.push(part);
        }
    }
    let reasons = if reasons.is_empty() {
        "not SDP".to_owned()
    } else {
        reasons.join("; ")
    };
    match place {
        Some(offset) => {
            let line_no = sdp[..offset].matches('\n').count() + 1;
            let line = sdp.lines().nth(line_no - 1).unwrap_or("");
            let shown: String = line.chars().take(80).collect();
            format!("line {line_no} (`{shown}`): {reasons}")
        }
        None => reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::change::SdpOffer;

    fn explained(sdp: &str) -> String {
        let error = SdpOffer::from_sdp_string(sdp).expect_err("not valid SDP");
        explain(sdp, error)
    }

    #[test]
    fn a_parse_error_names_the_line_and_no_memory_address() {
        let why = explained("v=0\r\nt=0 0\r\ns=-\r\n");
        assert!(why.starts_with("line 2 (`t=0 0`): "), "{why}");
        assert!(why.contains("Unexpected `t`"), "{why}");
        assert!(!why.contains("0x") && !why.contains("Pointer"), "{why}");
    }

    #[test]
    fn an_error_without_a_place_keeps_its_reasons() {
        assert_eq!(
            explain(
                "v=0",
                "SDP parse: Parse error at PointerOffset(0x10)\nUnexpected end"
            ),
            "Unexpected end"
        );
        assert_eq!(explain("", "SDP parse: \n"), "not SDP");
    }
}
