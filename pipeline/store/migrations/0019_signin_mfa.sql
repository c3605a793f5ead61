-- A console sign-in's MFA: ActionTrail records it in additionalEventData (mfaChecked for a RAM user,
-- isMFAChecked for the root account), usually without any sessionContext, so mfa_authenticated was
-- NULL for real sign-ins. Ingest now fills it from there (pipeline.ingest.events.signin_mfa); this
-- backfills the sign-ins already stored, from the raw event where retention kept it. Only sign-ins
-- are touched (a few per person per day), so it costs a scan of event_name, not of the raw JSON.
UPDATE events
SET mfa_authenticated = CASE lower(coalesce(json_extract_string(raw, '$.additionalEventData.mfaChecked'),
                                            json_extract_string(raw, '$.additionalEventData.isMFAChecked')))
                            WHEN 'true' THEN true WHEN 'false' THEN false ELSE mfa_authenticated END
WHERE event_name = 'ConsoleSignin' AND raw IS NOT NULL;
