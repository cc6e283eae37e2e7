//! Key material tests. Fingerprints are checked against values computed
//! independently by `ssh-keygen` and `openssl` (deploy/packages/test.txt);
//! the tests fail when those tools are missing.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use super::*;

/// Runs a tool, feeding `stdin`; panics (with its stderr) unless it succeeds.
fn run(cmd: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd} is required (deploy/packages/test.txt): {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap().trim().to_string()
}

/// `openssl sha1 -c`/`md5 -c` print `SHA1(stdin)= aa:bb:...`.
fn openssl_digest(out: Vec<u8>) -> String {
    let t = text(out);
    t.rsplit("= ").next().unwrap().to_string()
}

/// Writes a private key file as ssh-keygen wants it (mode 0600).
fn write_private(dir: &Path, pem: &str) -> String {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join("id");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    f.write_all(pem.as_bytes()).unwrap();
    path.to_str().unwrap().to_string()
}

/// `ssh-keygen -t <type>` into a fresh directory: (private path, public line).
fn ssh_keygen(dir: &Path, args: &[&str]) -> (String, String) {
    let path = dir.join("k").to_str().unwrap().to_string();
    let mut all = vec!["-q", "-N", "", "-C", "me@host", "-f", &path];
    all.extend_from_slice(args);
    run("ssh-keygen", &all, b"");
    let public = std::fs::read_to_string(format!("{path}.pub")).unwrap();
    (path, public.trim().to_string())
}

/// EC2's imported-RSA fingerprint, computed as its documentation says.
fn openssl_import_fingerprint(dir: &Path, public_line: &str) -> String {
    let pubfile = dir.join("pub");
    std::fs::write(&pubfile, format!("{public_line}\n")).unwrap();
    let pkcs8 = run(
        "ssh-keygen",
        &["-e", "-m", "PKCS8", "-f", pubfile.to_str().unwrap()],
        b"",
    );
    let der = run("openssl", &["pkey", "-pubin", "-outform", "DER"], &pkcs8);
    openssl_digest(run("openssl", &["md5", "-c"], &der))
}

#[test]
fn generated_rsa_key_is_pkcs1_and_fingerprinted_as_ec2() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_rsa("mykey").unwrap();
    assert_eq!(key.kind, KeyKind::Rsa);
    assert!(key
        .private_pem
        .starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
    let path = write_private(dir.path(), &key.private_pem);
    // CreateKeyPair rsa: SHA-1 of the DER PKCS#8 private key.
    let der = run(
        "openssl",
        &[
            "pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in", &path,
        ],
        b"",
    );
    let expected = openssl_digest(run("openssl", &["sha1", "-c"], &der));
    assert_eq!(key.fingerprint, expected);
    assert_eq!(key.fingerprint.len(), 20 * 3 - 1);
    // The public line is the one OpenSSH derives from the private key.
    let derived = text(run("ssh-keygen", &["-y", "-f", &path], b""));
    assert!(key.public_line.starts_with(&derived), "{derived}");
    assert!(key.public_line.ends_with(" mykey"));
    let bits = text(run("ssh-keygen", &["-l", "-f", &path], b""));
    assert!(bits.starts_with("2048 "), "{bits}");
    // Importing the generated public key gives EC2's import fingerprint.
    let imported = parse_public_key(key.public_line.as_bytes()).unwrap();
    assert_eq!(imported.kind, KeyKind::Rsa);
    assert_eq!(
        imported.fingerprint,
        openssl_import_fingerprint(dir.path(), &key.public_line)
    );
    assert_eq!(format!("{} mykey", imported.public_line), key.public_line);
}

#[test]
fn generated_ed25519_key_is_openssh_and_fingerprinted_as_ec2() {
    let dir = tempfile::tempdir().unwrap();
    let (public, private, fp) = generate_ed25519("test");
    assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
    let path = write_private(dir.path(), &private);
    let derived = text(run("ssh-keygen", &["-y", "-f", &path], b""));
    assert!(public.starts_with(&derived), "{derived}");
    let listed = text(run("ssh-keygen", &["-l", "-f", &path], b""));
    // "256 SHA256:<unpadded base64> test (ED25519)"; EC2 pads it.
    let sha = listed.split_whitespace().nth(1).unwrap();
    assert_eq!(format!("SHA256:{}", fp.trim_end_matches('=')), sha);
    assert!(fp.ends_with('='));
    let imported = parse_public_key(public.as_bytes()).unwrap();
    assert_eq!(imported.kind, KeyKind::Ed25519);
    assert_eq!(imported.fingerprint, fp);
}

#[test]
fn openssh_and_rfc4716_rsa_imports_of_every_accepted_size_agree() {
    for bits in ["1024", "2048", "4096"] {
        let dir = tempfile::tempdir().unwrap();
        let (path, public) = ssh_keygen(dir.path(), &["-t", "rsa", "-b", bits]);
        let from_line = parse_public_key(public.as_bytes()).unwrap();
        assert_eq!(from_line.kind, KeyKind::Rsa);
        assert_eq!(
            from_line.fingerprint,
            openssl_import_fingerprint(dir.path(), &public),
            "{bits}"
        );
        // The served line is the key without its comment.
        assert_eq!(format!("{} me@host", from_line.public_line), public);
        // RFC 4716, as `ssh-keygen -e` writes it (a Comment header).
        let rfc = text(run(
            "ssh-keygen",
            &["-e", "-f", &format!("{path}.pub")],
            b"",
        ));
        assert!(rfc.starts_with("---- BEGIN SSH2 PUBLIC KEY ----"), "{rfc}");
        assert_eq!(parse_public_key(rfc.as_bytes()).unwrap(), from_line);
    }
}

#[test]
fn rfc4716_with_continued_headers_and_ed25519() {
    let dir = tempfile::tempdir().unwrap();
    let (path, public) = ssh_keygen(dir.path(), &["-t", "ed25519"]);
    let from_line = parse_public_key(public.as_bytes()).unwrap();
    let listed = text(run("ssh-keygen", &["-l", "-f", &path], b""));
    let sha = listed.split_whitespace().nth(1).unwrap();
    assert_eq!(
        format!("SHA256:{}", from_line.fingerprint.trim_end_matches('=')),
        sha
    );
    let blob = public.split_whitespace().nth(1).unwrap();
    let (a, b) = blob.split_at(20);
    let rfc = format!(
        "---- BEGIN SSH2 PUBLIC KEY ----\r\nSubject: me\r\nComment: \"a long \\\r\ncomment\"\r\nx-Private: 1\r\n{a}\r\n{b}\r\n---- END SSH2 PUBLIC KEY ----\r\n"
    );
    assert_eq!(parse_public_key(rfc.as_bytes()).unwrap(), from_line);
}

fn code(material: &[u8]) -> String {
    match parse_public_key(material) {
        Err(e) => e.code().to_string(),
        Ok(k) => panic!("accepted {:?}: {k:?}", String::from_utf8_lossy(material)),
    }
}

fn line_of(blob: &[u8], kind: &str) -> String {
    format!("{kind} {}", B64.encode(blob))
}

#[test]
fn keys_ec2_refuses_are_invalid_key_format() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ecdsa) = ssh_keygen(dir.path(), &["-t", "ecdsa"]);
    assert_eq!(code(ecdsa.as_bytes()), "InvalidKey.Format");

    // DSA (OpenSSH no longer generates it): ssh-dss p q g y.
    let mut dss = Vec::new();
    put_string(&mut dss, b"ssh-dss");
    for _ in 0..4 {
        put_string(&mut dss, &[1; 20]);
    }
    assert_eq!(
        code(line_of(&dss, "ssh-dss").as_bytes()),
        "InvalidKey.Format"
    );

    // A 512-bit RSA key is too small; so is a tiny modulus.
    let small = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 512).unwrap();
    let blob = rsa_blob(&small.to_public_key());
    assert_eq!(
        code(line_of(&blob, "ssh-rsa").as_bytes()),
        "InvalidKey.Format"
    );
}

#[test]
fn material_that_is_not_a_key_is_invalid_key_format() {
    let (ed, _, _) = generate_ed25519("c");
    let ed_blob = B64.decode(ed.split_whitespace().nth(1).unwrap()).unwrap();
    let rsa_line = generate_rsa("c").unwrap().public_line;
    let rsa_blob_ = B64
        .decode(rsa_line.split_whitespace().nth(1).unwrap())
        .unwrap();

    let mut trailing = ed_blob.clone();
    trailing.push(0);
    let mut short_ed = Vec::new();
    put_string(&mut short_ed, b"ssh-ed25519");
    put_string(&mut short_ed, &[7; 31]);
    let mut huge_len = Vec::new();
    put_string(&mut huge_len, b"ssh-rsa");
    huge_len.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut negative = Vec::new();
    put_string(&mut negative, b"ssh-rsa");
    put_string(&mut negative, &[1, 0, 1]);
    put_string(&mut negative, &[0x80; 256]);
    let mut even_exponent = Vec::new();
    put_string(&mut even_exponent, b"ssh-rsa");
    put_string(&mut even_exponent, &[2]);
    let n = B64
        .decode(rsa_line.split_whitespace().nth(1).unwrap())
        .unwrap();
    // The modulus is the last string of the generated blob.
    let modulus = &n[n.len() - 257..];
    put_string(&mut even_exponent, modulus);

    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"ssh-ed25519".to_vec(),
        b"ssh-ed25519 !!!".to_vec(),
        b"hello world".to_vec(),
        b"ssh-foo AAAA".to_vec(),
        vec![0xff, 0xfe, b' ', b'x'],
        // The type on the line and in the blob differ.
        line_of(&ed_blob, "ssh-rsa").into_bytes(),
        line_of(&rsa_blob_, "ssh-ed25519").into_bytes(),
        // Truncated blobs.
        line_of(&ed_blob[..ed_blob.len() - 1], "ssh-ed25519").into_bytes(),
        line_of(&rsa_blob_[..rsa_blob_.len() - 10], "ssh-rsa").into_bytes(),
        line_of(&rsa_blob_[..3], "ssh-rsa").into_bytes(),
        line_of(&trailing, "ssh-ed25519").into_bytes(),
        line_of(&short_ed, "ssh-ed25519").into_bytes(),
        line_of(&huge_len, "ssh-rsa").into_bytes(),
        line_of(&negative, "ssh-rsa").into_bytes(),
        line_of(&even_exponent, "ssh-rsa").into_bytes(),
        // RFC 4716 without an end line, without a body, with a bad header.
        format!(
            "---- BEGIN SSH2 PUBLIC KEY ----\n{}\n",
            B64.encode(&ed_blob)
        )
        .into_bytes(),
        b"---- BEGIN SSH2 PUBLIC KEY ----\nComment: x\n---- END SSH2 PUBLIC KEY ----\n".to_vec(),
        format!(
            "---- BEGIN SSH2 PUBLIC KEY ----\nbad tag: x\n{}\n---- END SSH2 PUBLIC KEY ----\n",
            B64.encode(&ed_blob)
        )
        .into_bytes(),
        // A private key is not a public key.
        generate_ed25519("x").1.into_bytes(),
        // Too long.
        format!("{ed} {}", "c".repeat(MAX_MATERIAL)).into_bytes(),
    ];
    for (i, bad) in cases.iter().enumerate() {
        assert_eq!(code(bad), "InvalidKey.Format", "case {i}");
    }
    // Sanity: the untouched keys are accepted.
    parse_public_key(ed.as_bytes()).unwrap();
    parse_public_key(rsa_line.as_bytes()).unwrap();
}

#[test]
fn mutated_and_truncated_blobs_never_panic() {
    let rsa_line = generate_rsa("c").unwrap().public_line;
    let (ed, _, _) = generate_ed25519("c");
    for line in [rsa_line, ed] {
        let kind = line.split_whitespace().next().unwrap().to_string();
        let blob = B64.decode(line.split_whitespace().nth(1).unwrap()).unwrap();
        for len in 0..blob.len() {
            let cut = line_of(&blob[..len], &kind);
            assert_eq!(code(cut.as_bytes()), "InvalidKey.Format", "{len}");
        }
        for _ in 0..2000 {
            let mut m = blob.clone();
            let i = rand::random_range(0..m.len());
            m[i] = rand::random();
            // Either a key or InvalidKey.Format; never a panic or another code.
            if let Err(e) = parse_public_key(line_of(&m, &kind).as_bytes()) {
                assert_eq!(e.code(), "InvalidKey.Format");
            }
        }
    }
}
