"""The one error type a stage shows to its user: a message naming the input, no library traceback."""


class UserError(Exception):
    """Bad input or params; the message names the file/line/item/key and what was expected."""
