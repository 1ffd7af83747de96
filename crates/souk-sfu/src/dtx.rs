//! Asking a publisher for Opus DTX.
//!
//! With `usedtx=1` in the answer, a browser's Opus encoder stops sending in silence (about
//! one packet in 400 ms instead of 50 a second), which frees a weak uplink for video and
//! spares every subscriber's downlink the same. The parameter belongs in the fmtp line of
//! the answer the publisher receives, since it states what the answerer prefers to get.
//! str0m 0.25 writes only the fmtp parameters of its own codec configuration, and the
//! one that can say `usedtx` cannot also carry RED, so the answer's text gets it here.
//! Nothing on our side changes: DTX only means fewer packets, and the forwarding and RED
//! paths already handle the gaps in timestamps.

/// `answer` with `usedtx=1` added to the fmtp line of every Opus payload type that does
/// not already say whether it wants DTX.
pub(crate) fn request_dtx(answer: &str) -> String {
    let opus_pts: Vec<&str> = answer
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(_, codec)| codec.to_ascii_lowercase().starts_with("opus/"))
        .map(|(pt, _)| pt)
        .collect();
    let mut out = String::with_capacity(answer.len() + 16 * opus_pts.len());
    // SDP lines end in CRLF; `split_inclusive` keeps each line's own ending.
    for line in answer.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let is_opus_fmtp = body
            .strip_prefix("a=fmtp:")
            .and_then(|rest| rest.split_once(' '))
            .is_some_and(|(pt, params)| opus_pts.contains(&pt) && !params.contains("usedtx="));
        if is_opus_fmtp {
            out.push_str(body);
            out.push_str(";usedtx=1");
            out.push_str(&line[body.len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\n\
        a=rtpmap:111 opus/48000/2\r\n\
        a=fmtp:111 minptime=10;useinbandfec=1\r\n\
        a=rtpmap:63 red/48000/2\r\n\
        a=fmtp:63 111/111\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
        a=rtpmap:96 VP8/90000\r\n\
        a=fmtp:96 x-google-start-bitrate=800\r\n";

    #[test]
    fn opus_fmtp_asks_for_dtx_and_nothing_else_changes() {
        let out = request_dtx(ANSWER);
        assert_eq!(
            out,
            ANSWER.replace(
                "a=fmtp:111 minptime=10;useinbandfec=1\r\n",
                "a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1\r\n"
            )
        );
    }

    #[test]
    fn an_answer_that_already_decides_dtx_is_left_alone() {
        let decided = ANSWER.replace("useinbandfec=1", "useinbandfec=1;usedtx=0");
        assert_eq!(request_dtx(&decided), decided);
    }

    #[test]
    fn an_answer_without_opus_is_unchanged() {
        let video_only =
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\na=fmtp:96 a=1\r\n";
        assert_eq!(request_dtx(video_only), video_only);
    }
}
