#!/bin/sh
# Type-check gwnode.py against the MicroPython stubs of each board family, in a venv of its own
# (the stubs replace the standard library's typeshed, so they cannot share the dev venv).
set -eu
PY=${PY:-python3}
VENV=${VENV:-.venv-mpy}
STDLIB=micropython-stdlib-stubs==1.29.0.post2
[ -x "$VENV/bin/mypy" ] || { "$PY" -m venv "$VENV" && "$VENV/bin/pip" install -q mypy==2.4.1; }
EXT=$(ls "$VENV"/lib/python3*/site-packages/mypy/typeshed/stubs/mypy-extensions/mypy_extensions.pyi)
for board in rp2 esp32; do
    typings="$VENV/typings-$board"
    if [ ! -d "$typings/stdlib" ]; then
        "$VENV/bin/pip" install -q --target "$typings" --no-deps \
            "micropython-$board-stubs==1.29.0.post1" "$STDLIB"
        cp "$EXT" "$typings/"
    fi
    echo "gwnode.py against micropython-$board-stubs:"
    MYPYPATH="$typings" "$VENV/bin/mypy" --config-file micropython/mypy.ini \
        --custom-typeshed-dir "$typings" micropython/gwnode.py
done
