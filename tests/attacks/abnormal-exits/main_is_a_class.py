# attack: main is a class, so calling it runs arbitrary __init__ code
# stopped-by: the harness requires a top-level def main
# expect: 422 missing-main


class main:
    pass
