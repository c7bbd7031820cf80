"""The book: its build (papermill, then Jupyter Book), the pages' set-up, charts, tables and the
headless-browser check of the built site. Needs the book's packages (requirements.txt)."""
