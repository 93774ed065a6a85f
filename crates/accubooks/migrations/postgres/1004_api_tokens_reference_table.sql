-- Shard-ready by company_id (Citus). Every tenant-owned table already has a primary key
-- and unique constraints that lead with company_id and foreign keys that carry it; the
-- one table that cannot is api_tokens: a bearer token is looked up by its hash before
-- the company is known, so its key is the hash alone. It becomes a reference table
-- (replicated to every node, read locally), and Citus refuses foreign keys from a
-- reference table to a distributed one, so its foreign key to members goes. A token is
-- still only ever inserted in the transaction that creates or reads its member, members
-- are never deleted, and the token lookup reads the member by (company_id, user_id):
-- a token without a member authenticates nobody.
alter table api_tokens drop constraint api_tokens_company_id_user_id_fkey;
