//! An error and its causes as one line, for errors a person reads. Pure: no I/O.
//!
//! Libraries wrap a cause in errors whose own text is vague ("dispatch failure", "error
//! connecting to server"); the useful part is further down the chain. Debug output would say it
//! too, but at a page's length.

/// `error`'s text, then each cause's that does not repeat what came before, joined by `: `.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        cause: Option<Box<Layer>>,
    }

    fn layer(text: &'static str, cause: Option<Layer>) -> Layer {
        Layer {
            text,
            cause: cause.map(Box::new),
        }
    }

    #[test]
    fn causes_follow_the_error_once_each() {
        let refused = layer("Connection refused (os error 111)", None);
        let connect = layer("tcp connect error", Some(refused));
        // A wrapper that already quotes its cause does not repeat it.
        let io = layer("io error: tcp connect error", Some(connect));
        let dispatch = layer("dispatch failure", Some(io));
        assert_eq!(
            error_chain(&dispatch),
            "dispatch failure: io error: tcp connect error: Connection refused (os error 111)"
        );
    }
}
