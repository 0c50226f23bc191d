"""The offline data builders (`python -m neucomp.data …`): the training corpus, its
shards and the dev-eval clips, all from Debian packages (docs/DATA.md). Never imported
by the inference path."""
