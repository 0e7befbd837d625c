-- One role per component (issue 19): each process connects as its own role and may do only
-- what its queries need. The roles are cluster-wide and created here NOLOGIN, without a
-- password: whoever runs the deployment gives each one LOGIN and a password (or grants it
-- to a login role of their own; see the README). Their privileges are in grants.sql, which
-- `tokendist db migrate` applies again after every migration, so a table added later is
-- granted by editing that one file.
--
-- Every database of a cluster runs this migration and several may run it at once (the
-- migration lock is per database): a role another database just created is not an error.
DO $$
DECLARE
    role TEXT;
BEGIN
    FOREACH role IN ARRAY ARRAY['tokendist_webhook', 'tokendist_relay', 'tokendist_consumer',
                                'tokendist_operator'] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role);
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
                    'role %s does not exist and %s may not create it: have an administrator '
                    'run CREATE ROLE %s NOLOGIN, then migrate again', role, current_user, role);
        END;
    END LOOP;
END $$;
