"""Uni-X Studio user interface (Gradio). Imports unix_core; unix_core never imports this package."""
