#!/usr/bin/env bash
# Deploy two Cloud Run services that authenticate to each other with s2sauth:
# "caller" (caller.py) calls "receiver" (../server_starlette.py), each running as
# its own service account. Run it from anywhere:
#
#   PROJECT_ID=my-project REGION=europe-west1 examples/cloudrun/deploy.sh
#
# Needs gcloud, logged in as someone who may create service accounts, deploy
# Cloud Run services and set their IAM policy (e.g. a project owner).
set -euo pipefail

: "${PROJECT_ID:?set PROJECT_ID to your Google Cloud project}"
REGION="${REGION:-europe-west1}"
export CLOUDSDK_CORE_PROJECT="$PROJECT_ID"
here="$(cd "$(dirname "$0")" && pwd)"

PROJECT_NUMBER="$(gcloud projects describe "$PROJECT_ID" --format='value(projectNumber)')"
CALLER_SA="caller-sa@${PROJECT_ID}.iam.gserviceaccount.com"
RECEIVER_SA="receiver-sa@${PROJECT_ID}.iam.gserviceaccount.com"
# Cloud Run's deterministic URLs: the caller calls this URL, and it is the receiver's
# AUDIENCE, so the two always agree.
RECEIVER_URL="https://receiver-${PROJECT_NUMBER}.${REGION}.run.app"
CALLER_URL="https://caller-${PROJECT_NUMBER}.${REGION}.run.app"
IMAGE="${REGION}-docker.pkg.dev/${PROJECT_ID}/s2sauth-examples/app"

gcloud services enable run.googleapis.com artifactregistry.googleapis.com cloudbuild.googleapis.com

# 1. One service account per service, holding no roles: neither needs any project access.
for sa in caller-sa receiver-sa; do
  gcloud iam service-accounts describe "${sa}@${PROJECT_ID}.iam.gserviceaccount.com" >/dev/null 2>&1 ||
    gcloud iam service-accounts create "$sa" --display-name "s2sauth example: ${sa%-sa}"
done

# 2. One image for both services (APP picks the module).
gcloud artifacts repositories describe s2sauth-examples --location "$REGION" >/dev/null 2>&1 ||
  gcloud artifacts repositories create s2sauth-examples --location "$REGION" --repository-format docker
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$here/Dockerfile" "$here/caller.py" "$here/../server_starlette.py" "$context/"
gcloud builds submit "$context" --tag "$IMAGE"

# 3. The receiver: its own identity, no unauthenticated access, and the app's own
#    allow-list (Cloud Run IAM checks the token too; the app checks WHO is calling).
gcloud run deploy receiver --image "$IMAGE" --region "$REGION" \
  --service-account "$RECEIVER_SA" \
  --no-allow-unauthenticated \
  --set-env-vars "APP=server_starlette,AUDIENCE=${RECEIVER_URL},ALLOWED_CALLERS=${CALLER_SA}"

# 4. Let the caller's account through Cloud Run IAM on the receiver (and nothing else).
gcloud run services add-iam-policy-binding receiver --region "$REGION" \
  --member "serviceAccount:${CALLER_SA}" --role roles/run.invoker

# 5. The caller: its own identity; it mints ID tokens for TARGET_URL from the metadata server.
gcloud run deploy caller --image "$IMAGE" --region "$REGION" \
  --service-account "$CALLER_SA" \
  --no-allow-unauthenticated \
  --set-env-vars "APP=caller,TARGET_URL=${RECEIVER_URL}/"

# 6. Try it: you call the caller (as yourself), the caller calls the receiver (as caller-sa).
echo
echo "Try it:"
echo "  curl -H \"Authorization: Bearer \$(gcloud auth print-identity-token)\" ${CALLER_URL}/"
echo "Expected: \"status\": 200 and the receiver saying hello to ${CALLER_SA}"
