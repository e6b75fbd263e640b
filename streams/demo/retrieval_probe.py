"""Labelled questions for the sample help center: the retrieval probe of the tests and of ``bench --kb``.

Each pair is a user's question and the ``doc_id`` of the article that answers it. The probe tests
rank quality on the sample tenant; the knowledge-base bench asks the same questions of a tenant
that holds the sample among thousands of other chunks, so quality is checked at size too.
"""

from __future__ import annotations

# Paraphrases of help-center questions, none copying an article's title.
PROBE = [
    ("How do I reset my password?", "reset-password"),
    ("I forgot my password and can't get in", "reset-password"),
    ("How much is the Business plan per user?", "plans-and-pricing"),
    ("Can I get my money back after paying?", "refunds"),
    ("How do I turn on two-step verification?", "two-factor-authentication"),
    ("my phone with the authenticator app was stolen", "lost-2fa-device"),
    ("What happens when I exceed the API request limit?", "api-rate-limits"),
    ("How can I download all of my workspace data?", "data-export"),
    ("I want you to erase my personal information under GDPR", "gdpr-data-deletion"),
    ("How do I connect Northwind to Slack?", "slack-integration"),
]

# Written after the articles and never used to tune them or alpha: a fairer estimate of quality.
HELD_OUT = [
    ("the password reset email link stopped working", "reset-password"),
    ("what do I pay for Starter if I pay yearly", "annual-billing"),
    ("which credit cards do you take", "payment-methods"),
    ("how long do you keep deleted files in the trash", "data-retention-backups"),
    ("rotate my API token", "api-keys"),
    ("how many calls per minute can the API handle on the Business plan", "api-rate-limits"),
    ("send events to my server when a task is completed", "webhooks"),
    ("create tasks with Zapier automation", "zapier-integration"),
    ("add Northwind as a tab in Microsoft Teams", "microsoft-teams-integration"),
    ("invite my coworkers to the workspace", "invite-teammates"),
    ("automatic user provisioning from Okta", "scim-provisioning"),
    ("who logged in and when, security history", "audit-log"),
    ("does the app work on a plane without internet", "mobile-offline-mode"),
    ("stop getting so many emails from you", "notifications"),
    ("what compensation do we get if you are down too long", "uptime-sla"),
    ("my account is locked after too many attempts", "cannot-log-in"),
    ("changes on my laptop don't appear on my phone", "sync-problems"),
    ("is Internet Explorer supported", "supported-browsers"),
    ("what is the biggest file I can upload", "storage-and-file-limits"),
    ("is my data encrypted", "security-encryption"),
    ("can our data stay in Europe", "data-residency"),
    ("try Business before paying", "free-trial"),
    ("I get credit for recommending you to friends?", "referral-program"),
    ("log out my old computer remotely", "active-sessions"),
    ("move our boards from Trello", "import-from-other-tools"),
    ("delete the whole workspace", "workspace-deletion"),
    ("share a file with a client outside the company using a link", "file-sharing"),
    ("put our logo in the app", "custom-branding"),
    ("give an external freelancer access to just one project", "guest-access"),
    ("change the email I sign in with", "change-email"),
]
