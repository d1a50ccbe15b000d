//! API tokens of the HTTP APIs: making a token, the tokens file (`sha256:<hex> <name>` per
//! line) that masters and agents read, checking the token a request presents against it, and
//! the middleware that answers 401 before any handler runs.
//!
//! A token is presented the way each client ecosystem does it: `Authorization: Bearer
//! <token>` (RFC 6750), DC/OS's `Authorization: token=<token>` (the DC/OS CLI,
//! marathon-python's `auth_token`), or HTTP Basic with the token as the password and any user
//! (chronos-python, Mesos frameworks' principal/secret).
//!
//! Only the sha256 of a token is ever stored on a node, so a copied tokens file lets nobody
//! in. Deliberately absent: scopes or roles per token (every valid token is an admin),
//! expiry, reloading the file without a restart, and rate limiting of failed attempts.

use crate::http_util::api_error;
use crate::tls::{PeerIdentity, Role};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use dcos_api::ApiError;
use dcos_runtime::image::Digest;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Every token starts with this, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "dcos_";
/// Random bytes in a token: 256 bits, beyond any guessing.
pub const TOKEN_RANDOM_BYTES: usize = 32;
/// Characters after the prefix: 32 bytes in unpadded base64url.
pub const TOKEN_BODY_CHARS: usize = 43;
/// Largest tokens file read (a line is about 80 bytes).
const TOKENS_FILE_MAX_BYTES: u64 = 1 << 20;
/// Most tokens in one file: every request compares against all of them.
pub const TOKENS_MAX: usize = 1000;
/// Longest token name.
pub const TOKEN_NAME_MAX_CHARS: usize = 64;
/// The `WWW-Authenticate` challenges of every 401, each in a header of its own: Bearer (RFC
/// 6750) and Basic, since clients built on httplib2 send Basic credentials only after a
/// Basic challenge.
pub const WWW_AUTHENTICATE_VALUES: [&str; 2] =
    ["Bearer realm=\"dcos-rs\"", "Basic realm=\"dcos-rs\""];
/// What a 401 for a request without the header says, and how to get a token.
pub const MISSING_TOKEN_MESSAGE: &str = "missing `Authorization: Bearer <token>` header (or `token=<token>`, or Basic with the token as the password; `dcos-rs up` keeps its token in <data-dir>/admin.token, `dcos-rs cluster setup` writes one to cli.toml)";
/// The file in `dcos-rs up`'s data dir that holds its admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Longest `Authorization` value looked at (a token is 48 characters; Basic adds a user).
const AUTHORIZATION_MAX_BYTES: usize = 1024;

/// A new random token: `dcos_` and 43 characters of base64url (32 bytes from the system's
/// secure random generator, through rustls' ring provider).
pub fn generate_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random number generator failed"))?;
    let token = format!("{TOKEN_PREFIX}{}", base64url(&bytes));
    debug_assert_eq!(token.len(), TOKEN_PREFIX.len() + TOKEN_BODY_CHARS);
    Ok(token)
}

/// Checks that `token` looks like one `generate_token` makes (a damaged file is caught
/// before the API refuses every request).
pub fn check_token_format(token: &str) -> Result<(), String> {
    let body = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or_else(|| format!("a token starts with {TOKEN_PREFIX:?}"))?;
    if body.len() != TOKEN_BODY_CHARS
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "a token is {TOKEN_PREFIX:?} and {TOKEN_BODY_CHARS} base64url characters"
        ));
    }
    Ok(())
}

/// The token in `path`, or a new one written there (mode 0600, created exclusively and
/// synced with its directory) when the file does not exist; `true` when it was made now.
/// An existing file readable by others is tightened to 0600; a damaged one is an error
/// that says what to do.
pub fn load_or_create_token(path: &Path) -> anyhow::Result<(String, bool)> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim();
            check_token_format(token).map_err(|reason| {
                anyhow::anyhow!(
                    "{} is damaged ({reason}): delete it and start again to make a new token (clients holding the old one must be given the new one)",
                    path.display()
                )
            })?;
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("making {} private (chmod 600)", path.display()))?;
            }
            Ok((token.to_string(), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = generate_token()?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            file.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .with_context(|| format!("syncing {}", dir.display()))?;
            }
            Ok((token, true))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Unpadded base64url (RFC 4648 §5).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // 1 input byte gives 2 characters, 2 give 3, 3 give 4.
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize]));
        }
    }
    out
}

/// The line of the tokens file for `token`: `sha256:<hex> <name>`.
pub fn token_line(token: &str, name: &str) -> String {
    format!("{} {name}", Digest::of_bytes(token.as_bytes()))
}

/// Checks a token's name: 1 to 64 letters, digits, '-', '_', '.', '@' (it is a word on a
/// line of the tokens file and appears in logs).
pub fn check_token_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > TOKEN_NAME_MAX_CHARS {
        return Err(format!(
            "token name {name:?} must be 1 to {TOKEN_NAME_MAX_CHARS} characters"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Err(format!(
            "token name {name:?}: only letters, digits, '-', '_', '.' and '@' are allowed"
        ));
    }
    Ok(())
}

/// Why a tokens file was refused; the message names the file and, for a bad line, its number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read {file}: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("{file} is {bytes} bytes, more than a tokens file may be ({TOKENS_FILE_MAX_BYTES})")]
    TooLarge { file: String, bytes: u64 },
    #[error("{file}:{line}: {reason}")]
    BadLine {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("{file} holds more than {TOKENS_MAX} tokens")]
    TooMany { file: String },
    #[error(
        "{file} holds no token: add one with `dcos-rs cluster setup` (lines `sha256:<hex> <name>`)"
    )]
    Empty { file: String },
}

/// One accepted token: the sha256 of the token and a name for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TokenEntry {
    sha256_hex: String,
    name: String,
}

/// The tokens a node accepts, read from its tokens file.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet {
    entries: Vec<TokenEntry>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: hashes are not secret, but they have no business in logs either.
        let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        f.debug_struct("TokenSet").field("names", &names).finish()
    }
}

impl TokenSet {
    /// Reads and parses a tokens file.
    pub fn load(path: &Path) -> Result<TokenSet, TokenFileError> {
        let file = path.display().to_string();
        let unreadable = |e: std::io::Error| TokenFileError::Unreadable {
            file: file.clone(),
            reason: e.to_string(),
        };
        let bytes = std::fs::metadata(path).map_err(unreadable)?.len();
        if bytes > TOKENS_FILE_MAX_BYTES {
            return Err(TokenFileError::TooLarge { file, bytes });
        }
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        TokenSet::parse(&text, &file)
    }

    /// Parses a tokens file's text; `file` names it in errors. Lines are
    /// `sha256:<64 lowercase hex> <name>`; blank lines and `#` comments are skipped.
    pub fn parse(text: &str, file: &str) -> Result<TokenSet, TokenFileError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| TokenFileError::BadLine {
                file: file.to_string(),
                line: index + 1,
                reason,
            };
            let mut words = line.split_whitespace();
            let (Some(hash), Some(name), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad(
                    "expected `sha256:<64 lowercase hex digits> <name>`".to_string()
                ));
            };
            let Some(digest) = Digest::parse(hash) else {
                let hint = if hash.starts_with(TOKEN_PREFIX) {
                    " (this looks like a token itself: the file holds only its sha256, as `dcos-rs cluster setup` writes it)"
                } else {
                    ""
                };
                return Err(bad(format!(
                    "{hash:?} is not `sha256:<64 lowercase hex digits>`{hint}"
                )));
            };
            check_token_name(name).map_err(bad)?;
            if entries.len() == TOKENS_MAX {
                return Err(TokenFileError::TooMany {
                    file: file.to_string(),
                });
            }
            entries.push(TokenEntry {
                sha256_hex: digest.hex().to_string(),
                name: name.to_string(),
            });
        }
        if entries.is_empty() {
            return Err(TokenFileError::Empty {
                file: file.to_string(),
            });
        }
        Ok(TokenSet { entries })
    }

    /// A set of one token (kept as its sha256 only), named `name`.
    pub fn of_token(token: &str, name: &str) -> TokenSet {
        TokenSet {
            entries: vec![TokenEntry {
                sha256_hex: Digest::of_bytes(token.as_bytes()).hex().to_string(),
                name: name.to_string(),
            }],
        }
    }

    /// These tokens and those of `other`.
    pub fn union(mut self, other: TokenSet) -> TokenSet {
        self.entries.extend(other.entries);
        self
    }

    /// The name of the token if it is one of ours. Every stored hash is compared in full,
    /// whether or not an earlier one matched, so the time taken says nothing about which.
    pub fn verify(&self, token: &str) -> Option<&str> {
        let presented = Digest::of_bytes(token.as_bytes());
        let presented = presented.hex().as_bytes();
        let mut found = None;
        for entry in &self.entries {
            if constant_time_eq(entry.sha256_hex.as_bytes(), presented) && found.is_none() {
                found = Some(entry.name.as_str());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Equality whose time depends only on the lengths (always 64 here).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What an API asks of its callers: one of `tokens`, or, when `certificate_role` is set, a
/// verified cluster certificate with that role (the agent API lets masters in that way).
#[derive(Debug, Clone)]
pub struct ApiAuth {
    pub tokens: Arc<TokenSet>,
    pub certificate_role: Option<Role>,
}

impl ApiAuth {
    pub fn tokens(tokens: Arc<TokenSet>) -> ApiAuth {
        ApiAuth {
            tokens,
            certificate_role: None,
        }
    }

    /// Accepts `request` or says why not (the 401 body).
    pub fn check(&self, request: &Request) -> Result<(), ApiError> {
        if let Some(role) = self.certificate_role {
            if crate::tls::peer_of(request.extensions())
                .is_some_and(|p: &PeerIdentity| p.role == role)
            {
                return Ok(());
            }
        }
        let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
        let (value, extra) = (values.next(), values.next());
        let Some(value) = value else {
            return Err(unauthorized(MISSING_TOKEN_MESSAGE));
        };
        if extra.is_some() {
            return Err(unauthorized(
                "malformed `Authorization` header: it is given more than once",
            ));
        }
        let token = presented_token(value).ok_or_else(|| {
            unauthorized("malformed `Authorization` header: expected `Bearer <token>`, `token=<token>` or Basic credentials with the token as the password")
        })?;
        match self.tokens.verify(&token) {
            Some(name) => {
                tracing::trace!(token = name, "authenticated");
                Ok(())
            }
            None => Err(unauthorized(
                "invalid token: it is not in this node's tokens file (`[auth] tokens_file`)",
            )),
        }
    }
}

/// The token an `Authorization` value presents: `Bearer <token>`, `token=<token>`, or
/// `Basic base64(<user>:<token>)` (schemes case-insensitive, RFC 7235). `None` when the
/// value is none of these.
fn presented_token(value: &HeaderValue) -> Option<String> {
    if value.len() > AUTHORIZATION_MAX_BYTES {
        return None;
    }
    let text = value.to_str().ok()?.trim();
    let one_word = |token: &str| {
        let token = token.trim();
        (!token.is_empty() && !token.contains(char::is_whitespace)).then(|| token.to_string())
    };
    if let Some(token) = text
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("token="))
        .map(|_| &text[6..])
    {
        return one_word(token);
    }
    let (scheme, rest) = text.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return one_word(rest);
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest.trim())?;
        let credentials = String::from_utf8(decoded).ok()?;
        let (_user, password) = credentials.split_once(':')?;
        return one_word(password).filter(|p| p == password);
    }
    None
}

/// Standard padded base64 (RFC 4648 §4), as Basic credentials are written; `None` if `text`
/// is not exactly that.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a' + 26) as u32),
            b'0'..=b'9' => Some((c - b'0' + 52) as u32),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, quad) in bytes.chunks(4).enumerate() {
        let last = i == bytes.len() / 4 - 1;
        let padding = quad.iter().rev().take_while(|c| **c == b'=').count();
        if padding > 2 || (padding > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for c in &quad[..4 - padding] {
            n = (n << 6) | value(*c)?;
        }
        n <<= 6 * padding as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - padding]);
    }
    Some(out)
}

/// A 401 in the API's error shape.
fn unauthorized(message: &str) -> ApiError {
    ApiError::new(401, "unauthorized", message)
}

/// True when a page's script sent the request (`X-Requested-With`, as the dashboard and
/// the usual JavaScript libraries mark theirs).
fn request_from_script(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key("x-requested-with")
}

/// Middleware: the request goes on only with what `auth` asks for, else 401 with the
/// `WWW-Authenticate` challenges (`WWW_AUTHENTICATE_VALUES`; Bearer only for a script).
pub async fn require_token(State(auth): State<ApiAuth>, request: Request, next: Next) -> Response {
    match auth.check(&request) {
        Ok(()) => next.run(request).await,
        Err(error) => {
            // A script's request (the dashboard's) gets no Basic challenge: a browser would
            // answer it with its own password dialog over the page.
            let from_script = request_from_script(request.headers());
            // The body is not read: the connection cannot carry another request, so say it
            // closes (a client answering the challenge, as httplib2 does, then reconnects
            // instead of writing into a closed socket).
            let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
                || request
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .is_some_and(|length| length.as_bytes() != b"0");
            let mut response = api_error(error);
            if has_body {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            for challenge in WWW_AUTHENTICATE_VALUES
                .iter()
                .filter(|c| !(from_script && c.starts_with("Basic")))
            {
                response.headers_mut().append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH_A: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn the_admin_token_is_made_once_private_and_then_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        let (token, made) = load_or_create_token(&path).unwrap();
        assert!(made);
        check_token_format(&token).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_token(&path).unwrap(), (token.clone(), false));
        assert_eq!(
            TokenSet::of_token(&token, "admin").verify(&token),
            Some("admin")
        );
        // A file others could read is tightened; a damaged one says what to do.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        load_or_create_token(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "").unwrap();
        let error = load_or_create_token(&path).unwrap_err().to_string();
        assert!(
            error.contains("damaged") && error.contains("delete it"),
            "{error}"
        );
    }

    #[test]
    fn tokens_are_prefixed_base64url_of_32_random_bytes() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        for token in [&a, &b] {
            let body = token.strip_prefix(TOKEN_PREFIX).unwrap();
            assert_eq!(body.len(), TOKEN_BODY_CHARS, "{token}");
            assert!(body
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        }
        // RFC 4648 test vectors (unpadded, url alphabet).
        for (input, expected) in [
            (&b""[..], ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
            (&[0xfb, 0xff], "-_8"),
        ] {
            assert_eq!(base64url(input), expected);
        }
    }

    #[test]
    fn a_token_verifies_against_its_line_and_nothing_else() {
        let token = generate_token().unwrap();
        let other = generate_token().unwrap();
        let text = format!(
            "# API tokens\n\n{HASH_A} old\n  {}  \n{}\n",
            token_line(&token, "admin"),
            token_line(&other, "ci@build")
        );
        let tokens = TokenSet::parse(&text, "tokens").unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens.verify(&token), Some("admin"));
        assert_eq!(tokens.verify(&other), Some("ci@build"));
        assert_eq!(tokens.verify(&format!("{token}x")), None);
        assert_eq!(tokens.verify(""), None);
        // The file's own line is not a token.
        assert_eq!(tokens.verify(&token_line(&token, "admin")), None);
        assert!(!format!("{tokens:?}").contains("sha256"));
    }

    #[test]
    fn bad_lines_are_named_with_file_and_line_number() {
        let token = generate_token().unwrap();
        let cases = [
            (format!("# ok\n{HASH_A}\n"), 2, "expected `sha256:"),
            (format!("\n\n{HASH_A} a b\n"), 3, "expected `sha256:"),
            (format!("{HASH_A} a\nsha1:abc x\n"), 2, "is not `sha256:"),
            (
                HASH_A.replace("sha256:0", "sha256:A") + " x",
                1,
                "is not `sha256:",
            ),
            (format!("{token} admin\n"), 1, "looks like a token itself"),
            (format!("{HASH_A} a/b\n"), 1, "only letters"),
        ];
        for (text, line, reason) in cases {
            let error = TokenSet::parse(&text, "/etc/dcos-rs/tokens").unwrap_err();
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("/etc/dcos-rs/tokens:{line}: ")),
                "{text:?}: {message}"
            );
            assert!(message.contains(reason), "{text:?}: {message}");
        }
        let error = TokenSet::parse("# nothing\n\n", "t").unwrap_err();
        assert!(error.to_string().contains("holds no token"), "{error}");
        let many = format!("{HASH_A} a\n").repeat(TOKENS_MAX + 1);
        assert_eq!(
            TokenSet::parse(&many, "t").unwrap_err(),
            TokenFileError::TooMany { file: "t".into() }
        );
        let error = TokenSet::load(Path::new("/nonexistent/tokens")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/tokens"), "{error}");
    }

    fn request(authorization: &[&str]) -> Request {
        let mut builder = Request::builder().uri("/v2/apps");
        for value in authorization {
            builder = builder.header(header::AUTHORIZATION, *value);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn the_authorization_header_is_checked() {
        let token = generate_token().unwrap();
        let auth = ApiAuth::tokens(Arc::new(
            TokenSet::parse(&token_line(&token, "admin"), "t").unwrap(),
        ));
        let check = |values: &[&str]| auth.check(&request(values)).map_err(|e| e.message);
        assert_eq!(check(&[&format!("Bearer {token}")]), Ok(()));
        assert_eq!(check(&[&format!("bearer  {token} ")]), Ok(()));
        // DC/OS's form, and Basic with the token as the password (any user).
        assert_eq!(check(&[&format!("token={token}")]), Ok(()));
        assert_eq!(check(&[&format!("Token={token}")]), Ok(()));
        let basic = |credentials: &str| {
            format!(
                "Basic {}",
                dcos_runtime::image::registry::base64(credentials.as_bytes())
            )
        };
        assert_eq!(check(&[&basic(&format!("marathon:{token}"))]), Ok(()));
        assert_eq!(check(&[&basic(&format!(":{token}"))]), Ok(()));
        assert!(check(&[&basic("admin:admin")])
            .unwrap_err()
            .starts_with("invalid token"));
        assert!(check(&["token=dcos_wrong"])
            .unwrap_err()
            .starts_with("invalid token"));
        assert!(check(&[])
            .unwrap_err()
            .starts_with("missing `Authorization"));
        let long = format!("Bearer {}", "x".repeat(AUTHORIZATION_MAX_BYTES));
        for malformed in [
            &format!("Basic {token}")[..],
            &basic(&token),
            &basic(&format!("user:{token} x")),
            "Basic !!!!",
            "Basic YQ",
            "Bearer",
            "Bearer ",
            "token=",
            &format!("Bearer {token} more"),
            &format!("Digest {token}"),
            &token,
            &long,
        ] {
            let message = check(&[malformed]).unwrap_err();
            assert!(
                message.contains("malformed `Authorization`"),
                "{malformed}: {message}"
            );
        }
        let twice = format!("Bearer {token}");
        assert!(check(&[&twice, &twice])
            .unwrap_err()
            .contains("more than once"));
        assert!(check(&["Bearer dcos_wrong"])
            .unwrap_err()
            .starts_with("invalid token"));

        // A master's certificate is enough where the API allows it; an agent's is not.
        let with_peer = |role: Role| {
            let mut request = request(&[]);
            let peer = PeerIdentity::new(role, "n1").unwrap();
            request.extensions_mut().insert(Some(peer));
            request
        };
        let agent_api = ApiAuth {
            certificate_role: Some(Role::Master),
            ..auth.clone()
        };
        assert!(agent_api.check(&with_peer(Role::Master)).is_ok());
        assert!(agent_api.check(&with_peer(Role::Agent)).is_err());
        assert!(auth.check(&with_peer(Role::Master)).is_err());
    }

    #[test]
    fn base64_decodes_padded_standard_text_only() {
        let cases: [(&str, Option<&[u8]>); 8] = [
            ("YWRtaW46YWRtaW4=", Some(b"admin:admin")),
            ("YQ==", Some(b"a")),
            ("YWI=", Some(b"ab")),
            ("YWJj", Some(b"abc")),
            ("YQ", None),
            ("Y===", None),
            ("YQ==YQ==", None),
            ("a-_b", None),
        ];
        for (text, expected) in cases {
            assert_eq!(base64_decode(text).as_deref(), expected, "{text}");
        }
        for bytes in [&b""[..], b"x", b"xy", b"xyz", b"token:dcos_abc-_"] {
            if bytes.is_empty() {
                continue;
            }
            let encoded = dcos_runtime::image::registry::base64(bytes);
            assert_eq!(base64_decode(&encoded).as_deref(), Some(bytes), "{encoded}");
        }
    }
}
