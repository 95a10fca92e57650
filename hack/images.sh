#!/usr/bin/env bash
# Builds one container image per operator through the one Dockerfile: `make images`.
#
#   IMAGE_PREFIX  (default nodepool-dev)       image names are $IMAGE_PREFIX/<operator>
#   IMAGE_TAG     (default dev)
#   IMAGE_BINARY  compile | prebuilt | auto (default)
#                 compile:  the Dockerfile's compile stage builds the binary (pulls the
#                           rust image);
#                 prebuilt: the binary is compiled here, with the same flags, into
#                           target/image/, and the Dockerfile packages it FROM scratch
#                           (no pull at all);
#                 auto:     compile when Docker Hub answers, else prebuilt.
#   DOCKER        the docker client (default: one that can run BuildKit builds;
#                 `hack/images.sh --print-client` prints which)
#
# Prints the image names it built, one per line, on its last lines.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${IMAGE_PREFIX:-nodepool-dev}
tag=${IMAGE_TAG:-dev}
binary=${IMAGE_BINARY:-auto}
operators=(nodepool-operator autoscaler-operator)

# The Dockerfile needs BuildKit (it skips the stage it does not use). A docker client with
# buildx has it; an older client (before 23, Debian's docker.io 20.10) has it built in,
# with DOCKER_BUILDKIT=1; a newer client without buildx has neither.
build() {
	if "${docker}" buildx version >/dev/null 2>&1; then
		"${docker}" buildx build --load "$@"
	else
		DOCKER_BUILDKIT=1 "${docker}" build "$@"
	fi
}
usable() {
	"$1" buildx version >/dev/null 2>&1 && return 0
	local major
	# `docker version` fails when no engine answers, yet prints the client's version.
	major=$("$1" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1 || true)
	[[ -n ${major} && ${major} -lt 23 ]]
}
docker=${DOCKER:-}
if [[ -z ${docker} ]]; then
	for candidate in docker /usr/bin/docker; do
		if command -v "${candidate}" >/dev/null && usable "${candidate}"; then
			docker=${candidate}
			break
		fi
	done
fi
if [[ -z ${docker} ]]; then
	echo "images: no docker client that can build with BuildKit (install buildx, or Debian's docker.io)" >&2
	exit 1
fi
# The image test asks which client this rule picks, and uses the same.
if [[ ${1:-} == --print-client ]]; then
	echo "${docker}"
	exit 0
fi
if ! "${docker}" info >/dev/null 2>&1; then
	echo "images: ${docker} reaches no Docker engine (DOCKER_HOST=${DOCKER_HOST:-unset})" >&2
	exit 1
fi

if [[ ${binary} == auto ]]; then
	if curl -s -m 5 -o /dev/null https://registry-1.docker.io/v2/; then
		binary=compile
	else
		binary=prebuilt
		echo "images: no registry reachable; compiling here and packaging FROM scratch" >&2
	fi
fi

if [[ ${binary} == prebuilt ]]; then
	# The flags of the Dockerfile's compile stage: a static binary for this machine.
	triple="$(uname -m)-unknown-linux-gnu"
	RUSTFLAGS="-C target-feature=+crt-static" \
		cargo build --release --locked --target "${triple}" \
		-p nodepool-operator --bin nodepool-operator \
		-p autoscaler-operator --bin autoscaler-operator
	mkdir -p target/image
	for op in "${operators[@]}"; do
		cp "target/${triple}/release/${op}" "target/image/${op}"
	done
fi

for op in "${operators[@]}"; do
	build --build-arg "BINARY=${binary}" --build-arg "OPERATOR=${op}" \
		-t "${prefix}/${op}:${tag}" . >&2
done
for op in "${operators[@]}"; do
	echo "${prefix}/${op}:${tag}"
done
