"""Reference data, the refdata service's domain: the instrument master (`master`) and the master
file shipped with the package (`instruments.toml`)."""
