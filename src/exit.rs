//! Process exit codes shared by every qsfs binary.
//!
//! The values follow `sysexits.h` so that systemd units can tell a bad configuration (which a
//! restart will not fix, see `RestartPreventExitStatus=`) from a transient failure.

/// Success.
pub const OK: i32 = 0;
/// A generic failure that has no more specific code.
pub const FAILURE: i32 = 1;
/// The command line was wrong (clap also uses 2 for its own usage errors).
pub const USAGE: i32 = 2;
/// An input file named on the command line does not exist or cannot be read (`EX_NOINPUT`).
pub const NO_INPUT: i32 = 66;
/// A service this program needs is not available (`EX_UNAVAILABLE`).
pub const UNAVAILABLE: i32 = 69;
/// An internal error (`EX_SOFTWARE`).
pub const SOFTWARE: i32 = 70;
/// An I/O error on a local file (`EX_IOERR`).
pub const IO_ERROR: i32 = 74;
/// A temporary failure; trying again later may work (`EX_TEMPFAIL`).
pub const TEMP_FAIL: i32 = 75;
/// A configuration file is missing, malformed or invalid (`EX_CONFIG`).
pub const CONFIG: i32 = 78;
