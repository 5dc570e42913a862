"""The discovery document and the token services, checked with PyJWT, an independent
and widely used JWT library, starting from the discovery URL only.

Usage: python3 test_discovery.py BASE_URL  (environment: MINIAUTH_ADMIN_TOKEN,
INTROSPECTION_CLIENT_ID, INTROSPECTION_CLIENT_SECRET). run.sh starts miniauth for it.
"""

import base64
import json
import os
import sys
import unittest
import urllib.error
import urllib.parse
import urllib.request

import jwt  # PyJWT
from jwt import PyJWKClient

BASE = sys.argv.pop(1) if len(sys.argv) > 1 else os.environ["MINIAUTH_BASE"]
DISCOVERY_URL = BASE + "/.well-known/openid-configuration"


def call(url, form=None, json_body=None, headers=None):
    """POSTs a form or JSON (GET without a body); answers (status, headers, JSON)."""
    data = None
    headers = dict(headers or {})
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif json_body is not None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, answer.headers, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read() or b"null")


def basic(user, password):
    raw = f"{user}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


class Discovery(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        status, headers, cls.meta = call(DISCOVERY_URL)
        assert status == 200, status
        # A user to log in as, through the admin API (the only thing not discovered).
        status, _, user = call(
            BASE + "/v1/admin/users",
            json_body={"account": "pyjwt", "password": "pyjwt-password"},
            headers={"Authorization": "Bearer " + os.environ["MINIAUTH_ADMIN_TOKEN"]},
        )
        assert status == 201, (status, user)
        cls.user_id = user["user_id"]
        cls.client = basic(
            os.environ["INTROSPECTION_CLIENT_ID"], os.environ["INTROSPECTION_CLIENT_SECRET"]
        )

    def login(self):
        """Tokens from the discovered token endpoint (password grant, as a form)."""
        self.assertIn("password", self.meta["grant_types_supported"])
        status, _, tokens = call(
            self.meta["token_endpoint"],
            form={"grant_type": "password", "account": "pyjwt", "password": "pyjwt-password"},
        )
        self.assertEqual(status, 200, tokens)
        return tokens

    def verify(self, token):
        """Verifies with the keys of the discovered jwks_uri, pinning the algorithms,
        issuer and audience."""
        key = PyJWKClient(self.meta["jwks_uri"]).get_signing_key_from_jwt(token)
        return jwt.decode(
            token,
            key.key,
            algorithms=self.meta["access_token_signing_alg_values_supported"],
            issuer=self.meta["issuer"],
            audience="miniauth",
        )

    def introspect(self, token, hint=None, headers=None):
        form = {"token": token}
        if hint:
            form["token_type_hint"] = hint
        return call(
            self.meta["introspection_endpoint"],
            form=form,
            headers=self.client if headers is None else headers,
        )

    def test_the_document_names_the_endpoints_under_the_base_url(self):
        for field in ("jwks_uri", "token_endpoint", "revocation_endpoint", "introspection_endpoint"):
            self.assertTrue(self.meta[field].startswith(BASE), field)
        self.assertEqual(self.meta["issuer"], "miniauth")
        self.assertIn(
            "client_secret_basic", self.meta["introspection_endpoint_auth_methods_supported"]
        )

    def test_pyjwt_verifies_a_token_found_through_discovery(self):
        tokens = self.login()
        claims = self.verify(tokens["access_token"])
        self.assertEqual(claims["sub"], str(self.user_id))
        self.assertIn("sid", claims)

    def test_pyjwt_rejects_a_tampered_token(self):
        token = self.login()["access_token"]
        head, body, signature = token.split(".")
        flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
        with self.assertRaises(jwt.InvalidSignatureError):
            self.verify(f"{head}.{body}.{flipped}")
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        claims["sub"] = str(int(claims["sub"]) + 1)
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        with self.assertRaises(jwt.InvalidSignatureError):
            self.verify(f"{head}.{forged}.{signature}")

    def test_introspection_needs_the_client_credentials(self):
        token = self.login()["access_token"]
        status, headers, _ = self.introspect(token, headers={})
        self.assertEqual(status, 401)
        self.assertTrue(headers["WWW-Authenticate"].startswith("Basic"))
        status, _, _ = self.introspect(
            token, headers=basic(os.environ["INTROSPECTION_CLIENT_ID"], "wrong-secret-0000")
        )
        self.assertEqual(status, 401)

    def test_introspection_describes_live_tokens_and_nothing_else(self):
        tokens = self.login()
        status, _, active = self.introspect(tokens["access_token"])
        self.assertEqual(status, 200)
        claims = self.verify(tokens["access_token"])
        self.assertTrue(active["active"])
        self.assertEqual(active["token_type"], "access_token")
        for field in ("sub", "iss", "exp", "iat", "sid", "jti"):
            self.assertEqual(active[field], claims[field], field)
        status, _, refresh = self.introspect(tokens["refresh_token"], hint="refresh_token")
        self.assertEqual((status, refresh["active"]), (200, True))
        self.assertEqual(refresh["token_type"], "refresh_token")
        self.assertEqual(refresh["sid"], claims["sid"])
        head, body, signature = tokens["access_token"].split(".")
        for dead in ("not-a-token", f"{head}.{body}.{signature[::-1]}", ""):
            status, _, answer = self.introspect(dead)
            self.assertEqual((status, answer), (200, {"active": False}), dead)

    def test_revoking_a_refresh_token_ends_its_session(self):
        tokens = self.login()
        status, _, _ = call(
            self.meta["revocation_endpoint"],
            form={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        )
        self.assertEqual(status, 200)
        self.assertEqual(self.introspect(tokens["refresh_token"])[2], {"active": False})
        # The access tokens of that session end with it ...
        self.assertEqual(self.introspect(tokens["access_token"])[2], {"active": False})
        # ... although their signature still verifies: introspection sees what the
        # JWKS alone cannot.
        self.verify(tokens["access_token"])

    def test_revoking_an_access_token_ends_its_session_refresh_tokens_included(self):
        tokens = self.login()
        status, _, _ = call(
            self.meta["revocation_endpoint"], form={"token": tokens["access_token"]}
        )
        self.assertEqual(status, 200)
        self.assertEqual(self.introspect(tokens["access_token"])[2], {"active": False})
        status, _, _ = call(
            self.meta["token_endpoint"],
            form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        )
        self.assertEqual(status, 401)

    def test_revoking_an_unknown_token_answers_200(self):
        status, _, _ = call(self.meta["revocation_endpoint"], form={"token": "never-issued"})
        self.assertEqual(status, 200)
        status, _, _ = call(self.meta["revocation_endpoint"], form={"token_type_hint": "x"})
        self.assertEqual(status, 400)


if __name__ == "__main__":
    unittest.main(verbosity=2)
