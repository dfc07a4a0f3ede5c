"""The application, shared by its two faces: the CLI (vh_orch.cli) and the API and pages
(vh_orch.api, vh_orch.web) call these functions with typed values and get typed values, or a
UserInputError naming its field, back; neither face imports the other.

Nothing is imported here: the CLI's quick path (cli/quick.py) uses views.py without loading
SQLAlchemy, so each caller imports the module it needs.
"""
