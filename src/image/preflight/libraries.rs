//! The programs in `/var/zdbfs/bin` load here: for each dynamic one the dynamic loader it
//! names exists and finds every library and symbol version it needs (what `ldd` asks the
//! loader, `LD_TRACE_LOADED_OBJECTS=1`); a static program needs nothing. Only glibc's loader
//! is asked (another loader would run the program): for one, that it exists is checked.

use super::Outcome;
use crate::image::exit;
use crate::image::layout::BIN;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const CHECK: &str = "libraries";
/// How much of a program is read to find its loader (the ELF and program headers and the
/// interpreter's name lie in its first page in practice).
const HEAD: u64 = 64 * 1024;
const EM_X86_64: u16 = 62;
const PT_INTERP: u32 = 3;

/// What kind of program a file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elf {
    /// Not an ELF file (a script): the loader has nothing to say.
    NotElf,
    /// A static x86_64 program.
    Static,
    /// A dynamic x86_64 program and the loader it names.
    Dynamic(String),
    /// An ELF file that cannot run here (why).
    Foreign(String),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?)).ok()
}

/// Classifies a program from its first bytes (ELF64 little-endian header, program headers,
/// `PT_INTERP`).
pub fn classify(head: &[u8]) -> Elf {
    if !head.starts_with(b"\x7fELF") {
        return Elf::NotElf;
    }
    if head.get(4) != Some(&2) || head.get(5) != Some(&1) {
        return Elf::Foreign("not a 64-bit little-endian ELF program".into());
    }
    match u16_at(head, 0x12) {
        Some(EM_X86_64) => {}
        Some(machine) => {
            return Elf::Foreign(format!("built for ELF machine {machine}, not x86_64"))
        }
        None => return Elf::Foreign("truncated ELF header".into()),
    }
    let truncated = || Elf::Foreign("its program headers cannot be read".into());
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (u64_at(head, 0x20), u16_at(head, 0x36), u16_at(head, 0x38))
    else {
        return truncated();
    };
    for i in 0..usize::from(phnum) {
        let at = phoff + i * usize::from(phentsize);
        let Some(kind) = u32_at(head, at) else {
            return truncated();
        };
        if kind != PT_INTERP {
            continue;
        }
        let (Some(offset), Some(size)) = (u64_at(head, at + 0x08), u64_at(head, at + 0x20)) else {
            return truncated();
        };
        let Some(name) = head.get(offset..offset.saturating_add(size)) else {
            return truncated();
        };
        let name = name.split(|b| *b == 0).next().unwrap_or_default();
        return Elf::Dynamic(String::from_utf8_lossy(name).into_owned());
    }
    Elf::Static
}

/// What the loader's trace (`LD_TRACE_LOADED_OBJECTS=1 LOADER PROGRAM`) says is missing: each
/// library not found, each symbol version not found (`libc.so.6: version `GLIBC_2.38' not
/// found`), and a library the loader could not open at all.
pub fn missing_from_trace(stdout: &str, stderr: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for line in stdout.lines().chain(stderr.lines()) {
        let line = line.trim();
        if let Some(name) = line.strip_suffix("=> not found") {
            missing.push(name.trim().to_string());
        } else if let Some(at) = line.find(": version `") {
            let what = &line[..line.find(" (required by").unwrap_or(line.len())];
            // "PROGRAM: LIBRARY: version `V' not found": keep "LIBRARY: version ..."
            let start = what[..at].rfind(": ").map_or(0, |p| p + 2);
            missing.push(what[start..].to_string());
        } else if let Some(rest) = line.split("error while loading shared libraries: ").nth(1) {
            missing.push(rest.split(':').next().unwrap_or(rest).trim().to_string());
        }
    }
    missing
}

/// What was found for one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing to load: a static program or a script.
    Static,
    /// A dynamic program that loads.
    Loads,
    /// A dynamic program whose loader (named) is missing.
    NoLoader(String),
    /// A dynamic program with libraries or symbol versions missing.
    Missing(Vec<String>),
    /// A program that cannot run here, or cannot be read (why).
    Unusable(String),
}

/// Judges every program of `bin` (the directory, for the messages).
pub fn decide(bin: &Path, programs: &[(String, Found)]) -> Outcome {
    let mut problems = Vec::new();
    let (mut dynamic, mut fixed) = (0, 0);
    for (name, found) in programs {
        match found {
            Found::Static => fixed += 1,
            Found::Loads => dynamic += 1,
            Found::NoLoader(loader) => problems.push(format!(
                "{name} needs the loader {loader}, which is missing: install libc6"
            )),
            Found::Missing(libraries) => problems.push(format!(
                "{name} needs {}, not found: install the package that ships {} (apt-file search \
                 NAME)",
                libraries.join(", "),
                if libraries.len() == 1 { "it" } else { "them" }
            )),
            Found::Unusable(why) => problems.push(format!("{name}: {why}")),
        }
    }
    if programs.is_empty() {
        Outcome::unknown(
            CHECK,
            format!(
                "cannot check: no programs in {} (is the image unpacked there?)",
                bin.display()
            ),
        )
    } else if problems.is_empty() {
        Outcome::ok(
            CHECK,
            format!(
                "{} programs in {}: {dynamic} find their libraries, {fixed} need none",
                programs.len(),
                bin.display()
            ),
        )
    } else {
        Outcome::failed(CHECK, exit::PREFLIGHT_LIBRARIES, problems.join("; "))
    }
}

fn examine(path: &Path) -> Found {
    let mut head = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(HEAD).read_to_end(&mut head));
    if let Err(e) = read {
        return Found::Unusable(format!("cannot be read: {e}"));
    }
    let loader = match classify(&head) {
        Elf::NotElf | Elf::Static => return Found::Static,
        Elf::Foreign(why) => return Found::Unusable(format!("cannot run here: {why}")),
        Elf::Dynamic(loader) => loader,
    };
    if !Path::new(&loader).exists() {
        return Found::NoLoader(loader);
    }
    let glibc = Path::new(&loader)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("ld-linux"));
    if !glibc {
        return Found::Loads;
    }
    let out = Command::new(&loader)
        .arg(path)
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .output();
    match out {
        Err(e) => Found::Unusable(format!("the loader {loader} cannot be run: {e}")),
        Ok(out) => {
            let missing = missing_from_trace(
                &String::from_utf8_lossy(&out.stdout),
                &String::from_utf8_lossy(&out.stderr),
            );
            if !missing.is_empty() {
                Found::Missing(missing)
            } else if out.status.success() {
                Found::Loads
            } else {
                Found::Unusable(format!(
                    "the loader {loader} refuses it ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
    }
}

/// Asks the loader about every executable file in `root`'s `/var/zdbfs/bin`.
pub fn check(root: &Path) -> Outcome {
    let bin = root.join(BIN);
    let mut programs = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&bin) {
        for entry in entries.flatten() {
            let path = entry.path();
            let executable = std::fs::metadata(&path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if executable {
                let name = entry.file_name().to_string_lossy().into_owned();
                programs.push((name, examine(&path)));
            }
        }
    }
    programs.sort_by(|a, b| a.0.cmp(&b.0));
    decide(&bin, &programs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::preflight::Status;

    /// An ELF64 x86_64 header with one program header of `kind` whose content is `interp`.
    fn elf(kind: u32, interp: &str) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x12..0x14].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        // The first program header is PT_LOAD (1), the second `kind`.
        b[0x40..0x44].copy_from_slice(&1u32.to_le_bytes());
        let ph = 0x40 + 0x38;
        b[ph..ph + 4].copy_from_slice(&kind.to_le_bytes());
        b[ph + 8..ph + 16].copy_from_slice(&0x100u64.to_le_bytes());
        b[ph + 0x20..ph + 0x28].copy_from_slice(&(interp.len() as u64 + 1).to_le_bytes());
        b[0x100..0x100 + interp.len()].copy_from_slice(interp.as_bytes());
        b
    }

    #[test]
    fn programs_are_classified_from_their_headers() {
        assert_eq!(
            classify(&elf(PT_INTERP, "/lib64/ld-linux-x86-64.so.2")),
            Elf::Dynamic("/lib64/ld-linux-x86-64.so.2".into())
        );
        assert_eq!(classify(&elf(4, "")), Elf::Static);
        assert_eq!(classify(b"#!/bin/sh\necho hi\n"), Elf::NotElf);
        let mut arm = elf(PT_INTERP, "/lib/ld-linux-aarch64.so.1");
        arm[0x12..0x14].copy_from_slice(&183u16.to_le_bytes());
        assert!(matches!(classify(&arm), Elf::Foreign(why) if why.contains("183")));
        assert!(matches!(
            classify(&elf(PT_INTERP, "x")[..0x50]),
            Elf::Foreign(_)
        ));
    }

    #[test]
    fn this_test_program_loads() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(examine(&exe), Found::Loads);
    }

    #[test]
    fn the_loader_trace_names_what_is_missing() {
        let stdout = "\tlinux-vdso.so.1 (0x00007f27)\n\tlibqsfsmiss.so.1 => not found\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f27)\n";
        let stderr = "/var/zdbfs/bin/zdb: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found (required by /var/zdbfs/bin/zdb)\n";
        assert_eq!(
            missing_from_trace(stdout, stderr),
            [
                "libqsfsmiss.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found"
            ]
        );
        assert_eq!(
            missing_from_trace(
                "",
                "./m: error while loading shared libraries: libfuse3.so.3: cannot open shared object file"
            ),
            ["libfuse3.so.3"]
        );
        assert!(missing_from_trace("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n", "").is_empty());
    }

    #[test]
    fn a_missing_library_names_the_program_and_the_library() {
        let bin = Path::new("/var/zdbfs/bin");
        let ok = decide(
            bin,
            &[
                ("minio".into(), Found::Static),
                ("zdb".into(), Found::Loads),
            ],
        );
        assert_eq!(ok.status, Status::Ok);
        assert!(ok.message.contains("1 find their libraries, 1 need none"));
        let failed = decide(
            bin,
            &[
                ("zdb".into(), Found::Loads),
                ("zdbfs".into(), Found::Missing(vec!["libfuse3.so.3".into()])),
                (
                    "zstor".into(),
                    Found::NoLoader("/lib64/ld-linux-x86-64.so.2".into()),
                ),
            ],
        );
        assert_eq!(failed.exit_code, Some(exit::PREFLIGHT_LIBRARIES));
        assert!(failed
            .message
            .contains("zdbfs needs libfuse3.so.3, not found"));
        assert!(failed
            .message
            .contains("zstor needs the loader /lib64/ld-linux-x86-64.so.2"));
        assert_eq!(decide(bin, &[]).status, Status::Unknown);
    }
}
