//! Dockerfile analysis over the real corpus in ../shared/corpus/dockerfiles.
