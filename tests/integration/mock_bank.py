#!/usr/bin/env python3
"""A mock bank for hub mode's integration tests: an OAuth 2.0 authorization server (RFC 6749
code flow with PKCE, RFC 7636, S256 only; OpenID Connect id_token) and an account API, over
TLS, stdlib only (the id_token is signed by the openssl command line).

Who may call what, as a bank that binds its TPPs to their QWAC:
  GET  /authorize   the user's browser (no client certificate needed): response_type=code,
                    client_id, redirect_uri, state, nonce, code_challenge,
                    code_challenge_method=S256, [scope], [user]. Records them and answers
                    302 to redirect_uri?code=...&state=..., with the same as JSON in the body
                    ({"location", "code", "state"}) for the test to follow.
  POST /token       the TPP over mTLS with its QWAC (--qwac-sha256 pins its certificate; any
                    other certificate, or none, gets 401 invalid_client). Form body:
                    grant_type=authorization_code: code (single use), redirect_uri and
                    client_id as given to /authorize, code_verifier whose S256 is the
                    code_challenge; or grant_type=refresh_token: refresh_token, client_id (the
                    refresh token is rotated: the old one stops working).
                    Answers access_token (expires_in --access-ttl seconds), refresh_token,
                    token_type Bearer and, for the code grant, an ES256 id_token (iss
                    --issuer, aud client_id, sub the user, nonce, iat, exp).
  GET  /accounts    the TPP over mTLS with its QWAC and Authorization: Bearer <a valid,
                    unexpired access token>: the user's accounts (with an IBAN); else 401
                    (400 for a second Authorization header).
                    Also under any prefix (/banks/alpha/accounts): a gateway forwards a
                    route's path as it came.
  GET  /jwks        the id_token's signing key as a JWK set (also written to --jwks-out).

What the tests control and read:
  --mode-file FILE  absent or empty: answer; "hang": read requests and answer none (a bank
                    that stopped answering, for the breaker); a status code: every request
                    gets it
  --log FILE        one JSON line per request: {"path", "grant_type", "status", "error",
                    "client_cert_sha256", "authorization", "issued"}; "error" is the OAuth
                    error answered (invalid_client, ...) or null; "issued" holds the
                    secrets the bank handed out in that answer (the code of /authorize; the
                    access_token, refresh_token and id_token of /token; the IBAN of /accounts),
                    for the tests to look for them where they must not be
  --ready-file FILE written once listening

A client certificate that does not chain to --client-ca fails the TLS handshake itself.

usage: mock_bank.py --cert C --key K --client-ca CA --qwac-sha256 HEX --issuer URL
                    [--host H] [--port P] [--access-ttl S] [--jwks-out F] [--log F]
                    [--mode-file F] [--ready-file F]
"""
import argparse
import base64
import hashlib
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

LOCK = threading.Lock()
IBAN = "DE89370400440532013000"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_ecdsa_to_raw(der):
    """An ECDSA-Sig-Value (SEQUENCE of two INTEGERs) as JWS wants it: R || S, 32 bytes each."""
    assert der[0] == 0x30
    pos = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[pos] == 0x02
        n = der[pos + 1]
        out += der[pos + 2:pos + 2 + n].lstrip(b"\0").rjust(32, b"\0")
        pos += 2 + n
    return out


class Signer:
    """An EC P-256 key made at start; signs with `openssl dgst`."""

    def __init__(self, workdir):
        self.key = os.path.join(workdir, "idtoken-signing.key")
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                        "-out", self.key], check=True, capture_output=True)
        spki = subprocess.run(["openssl", "ec", "-in", self.key, "-pubout", "-outform", "DER"],
                              check=True, capture_output=True).stdout
        point = spki[-65:]  # 04 || X || Y ends the SubjectPublicKeyInfo of a P-256 key
        assert point[0] == 4
        self.kid = b64url(hashlib.sha256(point).digest()[:12])
        self.jwks = {"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
                               "kid": self.kid, "x": b64url(point[1:33]),
                               "y": b64url(point[33:])}]}

    def sign_jwt(self, claims):
        head = b64url(json.dumps({"alg": "ES256", "typ": "JWT", "kid": self.kid}).encode())
        body = b64url(json.dumps(claims).encode())
        signing_input = ("%s.%s" % (head, body)).encode()
        der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                             input=signing_input, check=True, capture_output=True).stdout
        return "%s.%s" % (signing_input.decode(), b64url(der_ecdsa_to_raw(der)))


class Bank:
    def __init__(self, a, signer):
        self.a = a
        self.signer = signer
        self.pending = {}   # code -> what /authorize recorded
        self.access = {}    # access token -> (user, expires at)
        self.refresh = {}   # refresh token -> user

    def issue(self, user):
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self.access[access] = (user, time.time() + self.a.access_ttl)
        self.refresh[refresh] = user
        return {"access_token": access, "token_type": "Bearer",
                "expires_in": self.a.access_ttl, "refresh_token": refresh}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "psd2edge-mock-bank"
    sys_version = ""
    timeout = 300

    def setup(self):
        self.request.settimeout(10)
        self.request = self.server.ssl_ctx.wrap_socket(self.request, server_side=True)
        self.request.settimeout(None)
        super().setup()

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("mock_bank: " + (fmt % args) + "\n")

    def client_cert_sha256(self):
        der = self.request.getpeercert(binary_form=True)
        return hashlib.sha256(der).hexdigest() if der else None

    def record(self, status, grant_type=None, issued=None, error=None):
        if not self.server.log_path:
            return
        e = {"path": self.path.split("?", 1)[0], "grant_type": grant_type, "status": status,
             "error": error, "client_cert_sha256": self.client_cert_sha256(),
             "authorization": self.headers.get("Authorization"), "issued": issued}
        with LOCK, open(self.server.log_path, "a") as f:
            f.write(json.dumps(e) + "\n")

    def answer(self, status, obj, headers=(), grant_type=None, issued=None):
        self.record(status, grant_type, issued, obj.get("error"))
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def oauth_error(self, status, error, description, grant_type=None):
        self.answer(status, {"error": error, "error_description": description},
                    grant_type=grant_type)

    def mode(self):
        """None to answer normally, "hang", or a status code."""
        try:
            with open(self.server.mode_file) as f:
                m = f.read().strip()
        except (TypeError, FileNotFoundError):
            return None
        return m or None

    def dispatch(self, body):
        m = self.mode()
        if m == "hang":
            self.record("hang")
            self.close_connection = False
            while self.mode() == "hang":
                time.sleep(0.05)
            self.close_connection = True
            return
        if m:
            return self.oauth_error(int(m), "server_error", "mode file says %s" % m)
        url = urllib.parse.urlsplit(self.path)
        route = {("GET", "/authorize"): self.authorize, ("POST", "/token"): self.token,
                 ("GET", "/accounts"): self.accounts, ("GET", "/jwks"): self.jwks}
        path = "/accounts" if url.path.endswith("/accounts") else url.path
        handler = route.get((self.command, path))
        if handler is None:
            return self.oauth_error(404, "not_found", "no such endpoint")
        handler(url, body)

    def read_body(self):
        n = int(self.headers.get("Content-Length", "0") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def do_GET(self):
        self.dispatch(b"")

    def do_POST(self):
        self.dispatch(self.read_body())

    def authorize(self, url, _body):
        q = dict(urllib.parse.parse_qsl(url.query))
        need = ("response_type", "client_id", "redirect_uri", "state", "nonce",
                "code_challenge", "code_challenge_method")
        missing = [k for k in need if not q.get(k)]
        if missing:
            return self.oauth_error(400, "invalid_request", "missing " + ", ".join(missing))
        if q["response_type"] != "code" or q["code_challenge_method"] != "S256":
            return self.oauth_error(400, "invalid_request", "code flow with S256 only")
        if q["client_id"] != self.server.a.client_id:
            return self.oauth_error(400, "unauthorized_client", "unknown client_id")
        code = secrets.token_urlsafe(24)
        with LOCK:
            self.server.bank.pending[code] = dict(q, user=q.get("user", "user-1"))
        location = "%s%scode=%s&state=%s" % (
            q["redirect_uri"], "&" if "?" in q["redirect_uri"] else "?", code,
            urllib.parse.quote(q["state"], safe=""))
        self.answer(302, {"location": location, "code": code, "state": q["state"]},
                    headers=[("Location", location)], issued={"code": code})

    def tpp_proven(self):
        return self.client_cert_sha256() == self.server.a.qwac_sha256

    def token(self, _url, body):
        f = dict(urllib.parse.parse_qsl(body.decode("ascii", "replace")))
        grant = f.get("grant_type")
        if not self.tpp_proven():
            return self.oauth_error(401, "invalid_client",
                                    "the TLS client certificate is not the TPP's QWAC", grant)
        if f.get("client_id") != self.server.a.client_id:
            return self.oauth_error(401, "invalid_client", "unknown client_id", grant)
        bank = self.server.bank
        if grant == "authorization_code":
            with LOCK:
                p = bank.pending.pop(f.get("code", ""), None)  # single use
            if p is None:
                return self.oauth_error(400, "invalid_grant", "unknown or used code", grant)
            if f.get("redirect_uri") != p["redirect_uri"]:
                return self.oauth_error(400, "invalid_grant", "redirect_uri differs", grant)
            verifier = f.get("code_verifier", "").encode()
            if b64url(hashlib.sha256(verifier).digest()) != p["code_challenge"]:
                return self.oauth_error(400, "invalid_grant", "code_verifier does not match",
                                        grant)
            with LOCK:
                out = bank.issue(p["user"])
            now = int(time.time())
            out["id_token"] = self.server.signer.sign_jwt(
                {"iss": self.server.a.issuer, "aud": p["client_id"], "sub": p["user"],
                 "nonce": p["nonce"], "iat": now, "exp": now + 300})
            return self.answer(200, out, grant_type=grant, issued=self.secrets(out))
        if grant == "refresh_token":
            with LOCK:
                user = bank.refresh.pop(f.get("refresh_token", ""), None)  # rotated
                out = bank.issue(user) if user else None
            if out is None:
                return self.oauth_error(400, "invalid_grant", "unknown or used refresh_token",
                                        grant)
            return self.answer(200, out, grant_type=grant, issued=self.secrets(out))
        self.oauth_error(400, "unsupported_grant_type", "grant_type %r" % grant, grant)

    @staticmethod
    def secrets(out):
        return {k: out[k] for k in ("access_token", "refresh_token", "id_token") if k in out}

    def accounts(self, _url, _body):
        if not self.tpp_proven():
            return self.oauth_error(401, "invalid_client",
                                    "the TLS client certificate is not the TPP's QWAC")
        if len(self.headers.get_all("Authorization", [])) > 1:
            return self.oauth_error(400, "invalid_request", "more than one Authorization header")
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        with LOCK:
            held = self.server.bank.access.get(token) if scheme.lower() == "bearer" else None
        if held is None or held[1] <= time.time():
            return self.oauth_error(401, "invalid_token", "unknown or expired access token")
        self.answer(200, {"user": held[0], "accounts": [
            {"iban": IBAN, "currency": "EUR", "name": "Erika Mustermann"}]},
            issued={"iban": IBAN})

    def jwks(self, _url, _body):
        self.answer(200, self.server.signer.jwks)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        if self.verbose:
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9444)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--client-ca", required=True, help="CA of the TPP's QWAC")
    ap.add_argument("--qwac-sha256", required=True,
                    help="SHA-256 (hex) of the QWAC the TPP registered with the bank")
    ap.add_argument("--client-id", default="hub-tpp", help="the TPP's client_id at the bank")
    ap.add_argument("--issuer", required=True, help="iss of the id_token")
    ap.add_argument("--access-ttl", type=int, default=300, help="expires_in of access tokens")
    ap.add_argument("--jwks-out", help="write the id_token's JWK set here")
    ap.add_argument("--log")
    ap.add_argument("--mode-file")
    ap.add_argument("--ready-file")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    a.qwac_sha256 = a.qwac_sha256.lower()

    Server.address_family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    srv = Server((a.host, a.port), Handler)
    srv.a = a
    srv.verbose = a.verbose
    srv.log_path = a.log
    srv.mode_file = a.mode_file
    workdir = tempfile.mkdtemp(prefix="mock-bank-")
    srv.signer = Signer(workdir)
    srv.bank = Bank(a, srv.signer)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(a.cert, a.key)
    # The browser's /authorize carries no certificate; /token and /accounts check the pin.
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(a.client_ca)
    srv.ssl_ctx = ctx
    if a.jwks_out:
        with open(a.jwks_out, "w") as f:
            json.dump(srv.signer.jwks, f)
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("%d\n" % os.getpid())
    # The tests stop it with SIGTERM: leave no signing key behind in /tmp.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
