//! The Freight replay source: Kargo Freight files from a folder (issue 11).
