"""The matrix-factorisation task (`task`), its study over learning rates and seeds (`study`) and the
study's markdown table (`table`)."""
