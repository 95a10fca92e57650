//! A node whose pool is gone, made anew under the same name, or being deleted, is deleted
//! too (drained first, by its finalizer).
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::reflector::ObjectRef;
use nodepool_core::nodes::{pool_of, pool_owner, replaced_or_deleted};
use operator_kit::NotFoundIsDone;
use shared_crd::NodePool;

use super::{Context, Error};

/// Deletes `node` when its pool no longer owns it, by the cache and then by the API server.
pub(super) async fn delete_if_orphaned(node: &Node, ctx: &Context) -> Result<(), Error> {
    if !is_orphaned(node, ctx) || !orphan_confirmed(node, ctx).await? {
        return Ok(());
    }
    let name = node.name_any();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let deleted = nodes
        .delete(&name, &DeleteParams::default())
        .await
        .ok_if_not_found()
        .map_err(|source| Error::OrphanDeletionFailed {
            node: name.clone(),
            source,
        })?;
    if deleted.is_some() {
        tracing::info!(node = %name, "deleting node: its pool is gone");
    }
    Ok(())
}

/// Whether the cache shows the pool that owns `node` gone, made anew or being deleted.
fn is_orphaned(node: &Node, ctx: &Context) -> bool {
    let (Some(pool_name), Some(owner)) = (pool_of(node), pool_owner(node)) else {
        return false;
    };
    match ctx.caches.pools.get(&ObjectRef::new(pool_name)) {
        None => true,
        Some(pool) => replaced_or_deleted(&pool.metadata, owner),
    }
}

/// Whether the API server agrees that the owning pool is gone, made anew or being
/// deleted. The cache can be wrong about absence (a pool this version cannot read is left
/// out of it; a watch can lag), so a node is deleted only after a live read of the pool's
/// metadata, as the garbage collector checks an owner before it deletes a dependent.
async fn orphan_confirmed(node: &Node, ctx: &Context) -> Result<bool, Error> {
    let (Some(pool_name), Some(owner)) = (pool_of(node), pool_owner(node)) else {
        return Ok(false);
    };
    let pools: Api<NodePool> = Api::all(ctx.client.clone());
    let live =
        pools
            .get_metadata_opt(pool_name)
            .await
            .map_err(|source| Error::OwnerLookupFailed {
                node: node.name_any(),
                source,
            })?;
    Ok(match live {
        None => true,
        Some(pool) => {
            let orphaned = replaced_or_deleted(&pool.metadata, owner);
            if !orphaned {
                tracing::warn!(
                    node = %node.name_any(), pool = %pool_name,
                    "the pool is not in the cache but exists: its node stays"
                );
            }
            orphaned
        }
    })
}
