//! A quiet end when the reader of stdout (or stderr) goes away: `tally lines --format json |
//! head -1` closes the pipe after one line, and Rust's `print!` panics on the next write
//! ("failed printing to stdout: Broken pipe"). The commands print with `print!` in many files;
//! one panic hook here turns exactly that panic into a silent exit with code 0, as a reader
//! that had seen enough is no failure of tally's (ripgrep and others do the same). Every other
//! panic keeps Rust's own report.
//!
//! Why not restore the default SIGPIPE action instead: the kernel would then kill the process
//! on a write to any closed socket as well, in the middle of a push, and the shell would show
//! exit code 141.

/// Installs the hook; call it first thing in `main`.
pub fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_broken_pipe(message) {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Whether a panic message is the standard library's report of a print to a closed pipe.
pub fn is_broken_pipe(message: &str) -> bool {
    // `print!`'s message is "failed printing to stdout: {io error}", the error being EPIPE's
    // "Broken pipe (os error 32)" on Linux.
    (message.starts_with("failed printing to stdout")
        || message.starts_with("failed printing to stderr"))
        && (message.contains("Broken pipe") || message.contains("os error 32"))
}

#[cfg(test)]
mod tests {
    use super::is_broken_pipe;

    #[test]
    fn only_a_print_to_a_closed_pipe_is_quiet() {
        assert!(is_broken_pipe(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(is_broken_pipe(
            "failed printing to stderr: Broken pipe (os error 32)"
        ));
        assert!(!is_broken_pipe(
            "failed printing to stdout: No space left on device (os error 28)"
        ));
        assert!(!is_broken_pipe(
            "called `Option::unwrap()` on a `None` value"
        ));
    }
}
