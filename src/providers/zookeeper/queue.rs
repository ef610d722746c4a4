//! ZooKeeper's leader recipe for the provider: the participant's ephemeral sequential node in
//! its group (created retry-safely, adopted after a lost reply, never handed out twice), the
//! lease confirmation by a write through the ensemble's leader plus an `exists` that checks
//! `czxid` and `ephemeralOwner`, the group's queue, the predecessor watch, and forgetting a
//! participant's node.

use std::time::Instant;

use zookeeper::{CreateMode, WatchedEvent, ZkError};

use super::session::Session;
use super::{BACKEND, Node, ZooKeeperProvider};
use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, LeaderInfo};

impl ZooKeeperProvider {
    /// Creates `path` and its parents as persistent nodes, ignoring those that exist.
    pub(super) fn ensure_path(
        &self,
        session: &Session,
        path: &str,
        deadline: Instant,
    ) -> Result<()> {
        let mut at = String::new();
        for seg in path[1..].split('/') {
            at.push('/');
            at.push_str(seg);
            let (p, acl) = (at.clone(), self.acl());
            self.run(session, "create path", deadline, move |zk| {
                match zk.create(&p, Vec::new(), acl.clone(), CreateMode::Persistent) {
                    Ok(_) | Err(ZkError::NodeExists) => Ok(()),
                    Err(e) => Err(e),
                }
            })?;
        }
        Ok(())
    }

    /// Deletes a node by path with the current session (whatever session created it).
    pub(super) fn delete(&self, session: &Session, path: String, deadline: Instant) -> Result<()> {
        self.run(session, "delete node", deadline, move |zk| {
            match zk.delete(&path, None) {
                Ok(()) | Err(ZkError::NoNode) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    /// Our node for (group, participant) in this session, creating it (and the group path)
    /// if needed. A node of an earlier session is deleted first: it would queue ahead of us.
    pub(super) fn own_node(
        &self,
        session: &Session,
        request: &AcquireRequest,
        deadline: Instant,
    ) -> Result<Node> {
        let key = (request.group.clone(), request.participant_id.clone());
        let existing = self.nodes.lock().get(&key).cloned();
        if let Some(n) = existing {
            if n.generation == session.generation {
                return Ok(n);
            }
            self.delete(session, n.path, deadline)?;
            self.nodes.lock().remove(&key);
        }
        let group_path = self.group_path(&request.group);
        let known = self.ensured.lock().get(&group_path) == Some(&session.generation);
        if self.options.create_root && !known {
            self.ensure_path(session, &group_path, deadline)?;
            self.ensured
                .lock()
                .insert(group_path.clone(), session.generation);
        }
        let record = LeaderInfo::new(
            &request.group,
            &request.participant_id,
            0,
            request.metadata.clone(),
        )
        .to_json()
        .into_bytes();
        // Keep the name prefix until the outcome is known, so a retry adopts the node a lost
        // reply created instead of queueing a second one.
        let guid = {
            let mut pending = self.pending.lock();
            match pending.get(&key) {
                Some((g, generation)) if *generation == session.generation => g.clone(),
                _ => {
                    let g = format!("{:016x}", crate::util::random_u64());
                    pending.insert(key.clone(), (g.clone(), session.generation));
                    g
                }
            }
        };
        let prefix = format!("{group_path}/{guid}-n_");
        let (acl, gp, data) = (self.acl(), group_path.clone(), record.clone());
        let path = self.run(session, "create node", deadline, move |zk| {
            let children = match zk.get_children(&gp, false) {
                Ok(c) => c,
                Err(ZkError::NoNode) => Vec::new(),
                Err(e) => return Err(e),
            };
            if let Some(c) = children.iter().find(|c| c.starts_with(&guid)) {
                return Ok(format!("{gp}/{c}"));
            }
            zk.create(
                &prefix,
                data.clone(),
                acl.clone(),
                CreateMode::EphemeralSequential,
            )
        });
        let path = match path {
            Err(Error::Backend { source, .. })
                if source.downcast_ref::<ZkError>() == Some(&ZkError::NoNode) =>
            {
                self.pending.lock().remove(&key);
                if self.options.create_root {
                    // The group node was deleted since we created it: recreate it next time.
                    self.ensured.lock().remove(&group_path);
                    return Err(Error::Backend {
                        backend: BACKEND,
                        operation: "create node",
                        transient: true,
                        source,
                    });
                }
                return Err(Error::config(
                    "root_path",
                    format!("{group_path} does not exist and create_root is off; create it first"),
                ));
            }
            other => other?,
        };
        let p = path.clone();
        let stat = self
            .run(session, "create node", deadline, move |zk| {
                zk.exists(&p, false)
            })?
            .ok_or_else(|| self.unavailable("our new election node vanished at once"))?;
        self.pending.lock().remove(&key);
        let node = Node {
            path,
            owner: stat.ephemeral_owner,
            czxid: stat.czxid,
            generation: session.generation,
            leased: false,
        };
        self.nodes.lock().insert(key, node.clone());
        Ok(node)
    }

    /// Confirms that `node` exists as created, owned by this session, and that the session is
    /// alive at the ensemble's leader.
    ///
    /// First a write (an empty `setData` on the group node): only the leader commits it, and
    /// only for a live session — a server cut off from the quorum could still answer reads.
    /// Then, on the same connection and so at least as fresh as that write, an `exists` of our
    /// node. (The write goes to the group node, not to ours: our successor watches our node,
    /// and a write to it would wake that follower at every renew.)
    pub(super) fn confirm(
        &self,
        session: &Session,
        group: &str,
        node: &Node,
        deadline: Instant,
    ) -> Result<bool> {
        let (gp, p) = (self.group_path(group), node.path.clone());
        let stat = self.run(session, "confirm node", deadline, move |zk| {
            match zk.set_data(&gp, Vec::new(), None) {
                Ok(_) | Err(ZkError::NoNode) => {}
                Err(e) => return Err(e),
            }
            zk.exists(&p, false)
        })?;
        Ok(stat.is_some_and(|s| s.ephemeral_owner == node.owner && s.czxid == node.czxid))
    }

    /// Reads a node's record, with its czxid as the token; `None` if it is gone.
    pub(super) fn read_info(
        &self,
        session: &Session,
        group: &str,
        path: String,
        deadline: Instant,
    ) -> Result<Option<LeaderInfo>> {
        let data = self.run(session, "read node", deadline, move |zk| {
            match zk.get_data(&path, false) {
                Ok(d) => Ok(Some(d)),
                Err(ZkError::NoNode) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        let Some((bytes, stat)) = data else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes).map_err(|_| Error::Corrupt {
            backend: BACKEND,
            group: group.to_owned(),
            detail: "node data is not UTF-8".into(),
        })?;
        let mut info = LeaderInfo::from_json(BACKEND, group, &text)?;
        info.fencing_token = u64::try_from(stat.czxid).unwrap_or(0);
        Ok(Some(info))
    }

    /// The group's election nodes, sorted by sequence number.
    pub(super) fn queue(
        &self,
        session: &Session,
        group: &str,
        deadline: Instant,
    ) -> Result<Vec<String>> {
        let gp = self.group_path(group);
        let mut children = self.run(session, "list nodes", deadline, move |zk| {
            match zk.get_children(&gp, false) {
                Ok(c) => Ok(c),
                Err(ZkError::NoNode) => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        })?;
        children.retain(|c| c.contains("-n_"));
        children.sort_by_key(|c| seq(c));
        Ok(children)
    }

    /// Watches `path` (our predecessor) once per session: waking `group`'s electors when it
    /// changes. Returns whether it still exists.
    pub(super) fn watch_predecessor(
        &self,
        session: &Session,
        group: &str,
        path: String,
        deadline: Instant,
    ) -> Result<bool> {
        let key = (session.generation, path.clone());
        if self.watched.lock().contains(&key) {
            return Ok(true);
        }
        let (watchers, watched, g, k) = (
            self.watchers.clone(),
            self.watched.clone(),
            group.to_owned(),
            key.clone(),
        );
        let exists = self.run(session, "watch predecessor", deadline, move |zk| {
            let (w, wd, g, k) = (watchers.clone(), watched.clone(), g.clone(), k.clone());
            zk.exists_w(&path, move |_: WatchedEvent| {
                wd.lock().remove(&k);
                w.wake(&g);
            })
        })?;
        if exists.is_some() {
            self.watched.lock().insert(key);
        }
        Ok(exists.is_some())
    }

    /// Deletes our node for (group, participant), whatever session created it, and forgets it.
    pub(super) fn forget(&self, key: &(String, String), deadline: Instant) -> Result<()> {
        let node = self.nodes.lock().get(key).cloned();
        let pending = self.pending.lock().get(key).cloned();
        if node.is_none() && pending.is_none() {
            return Ok(());
        }
        let session = self.session(deadline)?;
        if let Some(n) = node {
            self.delete(&session, n.path, deadline)?;
        }
        if let Some((guid, generation)) = pending
            && generation == session.generation
        {
            for name in self.queue(&session, &key.0, deadline)? {
                if name.starts_with(&guid) {
                    let path = format!("{}/{name}", self.group_path(&key.0));
                    self.delete(&session, path, deadline)?;
                }
            }
        }
        self.nodes.lock().remove(key);
        self.pending.lock().remove(key);
        Ok(())
    }
}

/// The sequence number at the end of a node name (10 digits).
pub(super) fn seq(name: &str) -> u64 {
    name.rsplit("-n_")
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}
