-- The links of the policy templates in a version (JSON, an array of template links): a
-- template applies only through its links, so they are kept, versioned, with the text.
ALTER TABLE policy_versions ADD COLUMN links TEXT NOT NULL DEFAULT '[]';
