//! Key pairs over the gateway: RSA and ed25519 creation, OpenSSH and
//! RFC 4716 imports, bad key material, and tenant isolation.

use base64::Engine as _;

use super::{cloud, texts, wait_state, V};
use crate::domain::keymaterial;

fn b64_param(material: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(material);
    form_urlencoded::byte_serialize(b64.as_bytes()).collect()
}

/// Wraps an OpenSSH public key line as an RFC 4716 block (64-column body).
fn rfc4716(line: &str) -> String {
    let body = line.split_whitespace().nth(1).unwrap();
    let mut out = String::from("---- BEGIN SSH2 PUBLIC KEY ----\nComment: \"imported\"\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str("---- END SSH2 PUBLIC KEY ----\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_and_ed25519_key_pairs_over_the_gateway() {
    let Some(c) = cloud().await else { return };

    // CreateKeyPair: RSA by default (as EC2), PKCS#1 PEM, SHA-1 fingerprint.
    let xml = c
        .ok(&format!("Action=CreateKeyPair&{V}&KeyName=k-rsa"))
        .await;
    assert!(texts(&xml, "keyMaterial")[0].starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let rsa_fp = texts(&xml, "keyFingerprint").remove(0);
    assert_eq!(rsa_fp.len(), 59, "{rsa_fp}");
    let xml = c
        .ok(&format!(
            "Action=CreateKeyPair&{V}&KeyName=k-ed&KeyType=ed25519&KeyFormat=pem"
        ))
        .await;
    assert!(texts(&xml, "keyMaterial")[0].starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    let (s, code) = c
        .err(&format!(
            "Action=CreateKeyPair&{V}&KeyName=k-ppk&KeyFormat=ppk"
        ))
        .await;
    assert_eq!((s, code.as_str()), (400, "InvalidParameterValue"));
    let (_, code) = c
        .err(&format!(
            "Action=CreateKeyPair&{V}&KeyName=k-dsa&KeyType=dsa"
        ))
        .await;
    assert_eq!(code, "InvalidParameterValue");

    // ImportKeyPair: an OpenSSH RSA line and an RFC 4716 ed25519 block.
    let rsa = keymaterial::generate_rsa("me@host").unwrap();
    let expected = keymaterial::parse_public_key(rsa.public_line.as_bytes()).unwrap();
    let xml = c
        .ok(&format!(
            "Action=ImportKeyPair&{V}&KeyName=i-rsa&PublicKeyMaterial={}",
            b64_param(&rsa.public_line)
        ))
        .await;
    assert_eq!(
        texts(&xml, "keyFingerprint"),
        std::slice::from_ref(&expected.fingerprint)
    );
    let (ed, _, ed_fp) = keymaterial::generate_ed25519("me@host");
    let xml = c
        .ok(&format!(
            "Action=ImportKeyPair&{V}&KeyName=i-ed&PublicKeyMaterial={}",
            b64_param(&rfc4716(&ed))
        ))
        .await;
    assert_eq!(texts(&xml, "keyFingerprint"), std::slice::from_ref(&ed_fp));

    // DescribeKeyPairs shows the type; the public key (what the metadata
    // service serves as openssh-key) is a plain OpenSSH line.
    let xml = c
        .ok(&format!(
            "Action=DescribeKeyPairs&{V}&IncludePublicKey=true&KeyName.1=i-rsa&KeyName.2=i-ed&KeyName.3=k-rsa&KeyName.4=k-ed"
        ))
        .await;
    let names = texts(&xml, "keyName");
    let types = texts(&xml, "keyType");
    let publics = texts(&xml, "publicKey");
    let by_name = |n: &str| {
        let i = names.iter().position(|x| x == n).unwrap();
        (types[i].as_str(), publics[i].as_str())
    };
    assert_eq!(by_name("i-rsa"), ("rsa", expected.public_line.as_str()));
    assert_eq!(by_name("k-rsa").0, "rsa");
    assert_eq!(by_name("k-ed").0, "ed25519");
    let (t, line) = by_name("i-ed");
    assert_eq!(t, "ed25519");
    assert!(ed.starts_with(line), "{line}");
    let xml = c
        .ok(&format!(
            "Action=DescribeKeyPairs&{V}&Filter.1.Name=fingerprint&Filter.1.Value.1={}",
            form_urlencoded::byte_serialize(ed_fp.as_bytes()).collect::<String>()
        ))
        .await;
    assert_eq!(texts(&xml, "keyName"), ["i-ed"]);

    // Bad input: not a key, an ECDSA key, a DSA key, a type mismatch.
    let mut ecdsa = Vec::new();
    for part in [&b"ecdsa-sha2-nistp256"[..], b"nistp256", &[4; 65]] {
        ecdsa.extend_from_slice(&(part.len() as u32).to_be_bytes());
        ecdsa.extend_from_slice(part);
    }
    let ecdsa = format!(
        "ecdsa-sha2-nistp256 {}",
        base64::engine::general_purpose::STANDARD.encode(&ecdsa)
    );
    let mismatch = format!(
        "ssh-ed25519 {}",
        rsa.public_line.split_whitespace().nth(1).unwrap()
    );
    for bad in [
        "not a key",
        "ssh-dss AAAAB3NzaC1kc3M=",
        &ecdsa,
        &mismatch,
        "  \n",
    ] {
        let (s, code) = c
            .err(&format!(
                "Action=ImportKeyPair&{V}&KeyName=bad&PublicKeyMaterial={}",
                b64_param(bad)
            ))
            .await;
        assert_eq!((s, code.as_str()), (400, "InvalidKey.Format"), "{bad}");
    }
    let (_, code) = c
        .err(&format!(
            "Action=ImportKeyPair&{V}&KeyName=i-rsa&PublicKeyMaterial={}",
            b64_param(&ed)
        ))
        .await;
    assert_eq!(code, "InvalidKeyPair.Duplicate");

    // Tenant isolation: B sees none of A's keys, and B's key of the same
    // name and B's deletes leave A's alone.
    let (_, code) = c
        .err_as(
            &c.b,
            &format!("Action=DescribeKeyPairs&{V}&KeyName.1=i-rsa"),
        )
        .await;
    assert_eq!(code, "InvalidKeyPair.NotFound");
    let (s, xml) = c
        .call_as(
            &c.b,
            &format!(
                "Action=ImportKeyPair&{V}&KeyName=i-rsa&PublicKeyMaterial={}",
                b64_param(&ed)
            ),
        )
        .await;
    assert_eq!(s, 200, "{xml}");
    let (s, _) = c
        .call_as(&c.b, &format!("Action=DeleteKeyPair&{V}&KeyName=k-rsa"))
        .await;
    assert_eq!(s, 200);
    let (_, xml) = c
        .call_as(&c.b, &format!("Action=DescribeKeyPairs&{V}"))
        .await;
    assert_eq!(texts(&xml, "keyName"), ["i-rsa"]);
    assert_eq!(texts(&xml, "keyType"), ["ed25519"]);
    let xml = c
        .ok(&format!(
            "Action=DescribeKeyPairs&{V}&KeyName.1=i-rsa&KeyName.2=k-rsa"
        ))
        .await;
    assert_eq!(texts(&xml, "keyType"), ["rsa", "rsa"]);
    assert!(texts(&xml, "keyFingerprint").contains(&rsa_fp));

    // An instance launched with the imported RSA key gets the OpenSSH line
    // in its assignment (what the node's metadata service serves as
    // public-keys/0/openssh-key).
    let ami = texts(
        &c.ok(&format!(
            "Action=DescribeImages&{V}&Filter.1.Name=name&Filter.1.Value.1=hello"
        ))
        .await,
        "imageId",
    )
    .remove(0);
    let xml = c
        .ok(&format!(
            "Action=RunInstances&{V}&ImageId={ami}&InstanceType=t3.micro&MinCount=1&MaxCount=1&KeyName=i-rsa"
        ))
        .await;
    let ids = texts(&xml, "instanceId");
    let owner = texts(&xml, "ownerId").remove(0);
    wait_state(&c, &ids, "running").await;
    let d = &c.replica.as_ref().unwrap().domain;
    let account = crate::ids::AccountId::parse(&owner).unwrap();
    let iid = crate::ids::InstanceId::parse(&ids[0]).unwrap();
    let inst = d
        .store
        .instances()
        .get(&account, &iid)
        .await
        .unwrap()
        .unwrap();
    let node = inst.value.node_id.unwrap();
    let a = d
        .store
        .assignments()
        .get(&node, &iid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.value.ssh_public_key, expected.public_line);
    assert!(a
        .value
        .ssh_public_key
        .starts_with("ssh-rsa AAAAB3NzaC1yc2E"));
}
