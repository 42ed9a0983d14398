"""Cloud Run's own token conventions, which both cores honour.

* A caller may send its ID token in ``X-Serverless-Authorization`` instead of (or
  beside) ``Authorization``; Cloud Run's IAM check then reads that header and passes
  ``Authorization`` through to the service untouched.
* The token in the header Cloud Run checked reaches the service with its signature
  replaced by ``SIGNATURE_REMOVED_BY_GOOGLE``.
"""

from __future__ import annotations

from typing import Final

#: Cloud Run's own header, for services whose ``Authorization`` header is taken.
X_SERVERLESS_AUTHORIZATION: Final = "X-Serverless-Authorization"
#: What Cloud Run puts in place of the signature of a token it already checked.
SIGNATURE_REMOVED: Final = "SIGNATURE_REMOVED_BY_GOOGLE"
