//! Tar archives: the content of a direct layer, which must be complete and uncompressed.

use std::io::{self, Cursor};

/// The tar block size: headers, data padding and the end-of-archive marker come in these.
const TAR_BLOCK: usize = 512;

/// Checks that `content` is a complete, uncompressed tar archive, reading every entry's data.
///
/// An archive with no entries (just the end-of-archive marker) is accepted: it is a valid, empty
/// layer. The messages never quote the archive's bytes or the tar crate's errors, which can
/// contain file names: the content is the caller's, and error messages end up in logs.
pub(super) fn check_tar_archive(content: &[u8]) -> Result<(), String> {
    const PREFIX: &str = "is not a complete uncompressed tar archive";
    if content.starts_with(&[0x1f, 0x8b]) {
        return Err(format!(
            "{PREFIX}: it is gzip-compressed; a direct layer carries the uncompressed tar"
        ));
    }
    if content.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(format!(
            "{PREFIX}: it is zstd-compressed; a direct layer carries the uncompressed tar"
        ));
    }

    let mut cursor = Cursor::new(content);
    let mut complete_entries = 0_usize;
    let malformed = |complete_entries: usize| {
        format!(
            "{PREFIX}: after {complete_entries} complete entries, the next header is malformed \
             (wrong checksum, unreadable field, cut short) or the bytes are not a tar archive"
        )
    };
    {
        let mut archive = ::tar::Archive::new(&mut cursor);
        let entries = archive.entries().map_err(|_| malformed(complete_entries))?;
        for entry in entries {
            let mut entry = entry.map_err(|_| malformed(complete_entries))?;
            let declared = entry.size();
            // The tar crate hands out a short read, not an error, for data cut short.
            let read =
                io::copy(&mut entry, &mut io::sink()).map_err(|_| malformed(complete_entries))?;
            if read != declared {
                return Err(format!(
                    "{PREFIX}: it is cut short in entry {complete_entries}, which declares \
                     {declared} bytes of data but has {read}"
                ));
            }
            complete_entries += 1;
        }
    }

    // The tar crate stops at the first zero block *or* at the end of the bytes, so an archive cut
    // at an entry boundary reads as complete. Only the end-of-archive marker, two zero blocks,
    // tells the two apart. The crate has read the first of them when it stopped before the end.
    let consumed = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
    let Some(marker_start) = consumed
        .checked_sub(TAR_BLOCK)
        .filter(|_| consumed < content.len())
    else {
        return Err(format!(
            "{PREFIX}: it does not end with the end-of-archive marker (two zero-filled 512-byte \
             blocks), so it may be cut short"
        ));
    };
    if !content.len().is_multiple_of(TAR_BLOCK) {
        return Err(format!(
            "{PREFIX}: it is {} bytes long, not a whole number of 512-byte blocks",
            content.len()
        ));
    }
    // GNU tar pads archives with zero blocks to a record size; anything else after the marker
    // would be served but ignored by every reader.
    if content[marker_start..].iter().any(|b| *b != 0) {
        return Err(format!(
            "{PREFIX}: it has data after the end-of-archive marker"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Caller;
    use crate::domain::validate::fixtures::{
        DIRECT_CONTENT, rules, tar_of, the_only_violation, with_direct_content,
    };
    use crate::domain::validate::validate_put;

    /// `printf 'hello\n' > hello.txt; tar --format=ustar -cf hello.tar hello.txt`: GNU tar pads
    /// the archive with zero blocks to its 10 KiB record size.
    const GNU_TAR: &[u8] = include_bytes!("../testdata/hello.tar");
    /// `gzip -9n hello.tar`
    const GZIPPED_TAR: &[u8] = include_bytes!("../testdata/hello.tar.gz");
    /// `zstd -19 hello.tar`
    const ZSTD_TAR: &[u8] = include_bytes!("../testdata/hello.tar.zst");

    fn tar_problem(content: &[u8]) -> String {
        let violation = the_only_violation(with_direct_content(content));
        assert_eq!(violation.field, DIRECT_CONTENT);
        violation.description
    }

    fn header_with_fixed_checksum(block: &[u8]) -> [u8; 512] {
        let mut header = ::tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(block);
        header.set_cksum();
        *header.as_bytes()
    }

    #[test]
    fn archives_built_by_the_tar_crate_are_accepted() {
        let long_name = format!("workspace/{}/file.txt", "d".repeat(150));
        let mut builder = ::tar::Builder::new(Vec::new());
        let mut dir = ::tar::Header::new_gnu();
        dir.set_entry_type(::tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_mode(0o755);
        builder
            .append_data(&mut dir, "workspace/", io::empty())
            .unwrap();
        for (path, data) in [
            ("workspace/a.txt", &b"hello"[..]),
            ("workspace/exactly-one-block", &[7; 512][..]),
            ("workspace/empty", &b""[..]),
            (long_name.as_str(), &[1; 1000][..]),
        ] {
            let mut header = ::tar::Header::new_gnu();
            header.set_size(u64::try_from(data.len()).unwrap());
            header.set_mode(0o644);
            builder.append_data(&mut header, path, data).unwrap();
        }
        let archive = builder.into_inner().unwrap();
        assert_eq!(check_tar_archive(&archive), Ok(()));
        assert!(validate_put(with_direct_content(&archive), &rules(), Caller::anonymous()).is_ok());
    }

    #[test]
    fn an_archive_made_by_gnu_tar_with_record_padding_is_accepted() {
        assert_eq!(GNU_TAR.len(), 10240);
        assert_eq!(check_tar_archive(GNU_TAR), Ok(()));
    }

    #[test]
    fn an_archive_with_no_entries_is_accepted_as_an_empty_layer() {
        let empty = tar_of(&[]);
        assert_eq!(empty, vec![0; 1024]);
        assert_eq!(check_tar_archive(&empty), Ok(()));
    }

    #[test]
    fn an_empty_direct_layer_is_rejected() {
        assert!(tar_problem(b"").contains("must not be empty"));
    }

    #[test]
    fn an_archive_cut_in_the_middle_of_an_entry_is_rejected() {
        let archive = tar_of(&[("a.txt", b"hello"), ("b.txt", &[1; 700])]);
        // a.txt: header 0..512, data 512..517, padding to 1024; b.txt: header 1024..1536, data
        // 1536..2236, padding to 2560; then the end-of-archive marker.
        for cut in [515, 1536 + 10, 2048] {
            let problem = tar_problem(&archive[..cut]);
            assert!(
                problem.contains("cut short in entry"),
                "cut at {cut}: {problem}"
            );
        }
        for cut in [100, 600, 1100, 1536 + 700] {
            let problem = tar_problem(&archive[..cut]);
            assert!(problem.contains("malformed"), "cut at {cut}: {problem}");
        }
    }

    #[test]
    fn an_archive_cut_at_an_entry_boundary_is_rejected() {
        let archive = tar_of(&[("a.txt", b"hello"), ("b.txt", b"world")]);
        for cut in [1024, 2048] {
            assert!(
                tar_problem(&archive[..cut]).contains("end-of-archive marker"),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_archive_ending_in_a_single_zero_block_is_rejected() {
        let archive = tar_of(&[("a.txt", b"hello")]);
        assert!(tar_problem(&archive[..archive.len() - 512]).contains("end-of-archive marker"));
        assert!(tar_problem(&[0; 512]).contains("end-of-archive marker"));
    }

    #[test]
    fn garbage_bytes_are_rejected() {
        for garbage in [
            &b"hello, this is not a tar archive"[..],
            &[0xab; 2048][..],
            &[b'0'; 1024][..],
            &[0; 100][..],
            &[0; 1000][..],
        ] {
            let problem = tar_problem(garbage);
            assert!(problem.starts_with("is not a complete"), "{problem}");
        }
    }

    #[test]
    fn a_header_with_a_wrong_checksum_is_rejected() {
        let mut archive = tar_of(&[("a.txt", b"hello")]);
        archive[0] = b'b';
        assert!(tar_problem(&archive).contains("malformed"));
    }

    #[test]
    fn compressed_archives_are_rejected() {
        assert!(tar_problem(GZIPPED_TAR).contains("gzip"));
        assert!(tar_problem(ZSTD_TAR).contains("zstd"));
    }

    #[test]
    fn data_after_the_end_of_archive_marker_is_rejected() {
        let mut archive = tar_of(&[("a.txt", b"hello")]);
        archive.extend([1; 512]);
        assert!(tar_problem(&archive).contains("after the end-of-archive marker"));

        let mut concatenated = tar_of(&[("a.txt", b"hello")]);
        concatenated.extend(tar_of(&[("b.txt", b"world")]));
        assert!(tar_problem(&concatenated).contains("after the end-of-archive marker"));
    }

    #[test]
    fn an_archive_that_is_not_whole_blocks_is_rejected() {
        let mut archive = tar_of(&[("a.txt", b"hello")]);
        archive.extend([0; 100]);
        assert!(tar_problem(&archive).contains("512-byte blocks"));
    }

    #[test]
    fn tar_violations_never_contain_the_layer_bytes() {
        let archive = tar_of(&[("SECRET-NAME", b"SECRET-DATA")]);
        let mut bad_size = archive.clone();
        bad_size[124..136].copy_from_slice(b"zzzzzzzzzzz\0");
        let fixed = header_with_fixed_checksum(&bad_size[..512]);
        bad_size[..512].copy_from_slice(&fixed);
        let mut bad_checksum = archive.clone();
        bad_checksum[148] = b'7';
        for broken in [
            bad_size,
            bad_checksum,
            archive[..600].to_vec(),
            archive[..1024].to_vec(),
            [archive.clone(), b"SECRET-TRAILER".to_vec()].concat(),
        ] {
            let problem = tar_problem(&broken);
            assert!(!problem.contains("SECRET"), "{problem}");
        }
    }
}
