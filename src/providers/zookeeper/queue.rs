//! ZooKeeper's leader recipe for the provider: the participant's ephemeral sequential node in
//! its group (created retry-safely, adopted after a lost reply, never handed out twice), the
//! one-round-trip lease confirmation (a multi-operation through the ensemble's leader: check
//! our node's version, and an empty `setData` on the group node), the group's queue, the
//! predecessor watch, and forgetting a participant's node.

use std::future::Future;
use std::time::Instant;

use zookeeper_client::{Acl, Acls, CreateMode, Error as ZkError, EventType, Permission};

use super::session::{Session, map_err, unavailable};
use super::{BACKEND, Node, ZooKeeperProvider};
use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, LeaderInfo};
use crate::providers::zookeeper::options::ZooKeeperAcl;

static CREATOR_ALL_WORLD_READ: [Acl; 2] = [
    Acl::new_const(Permission::ALL, "auth", ""),
    Acl::new_const(Permission::READ, "world", "anyone"),
];

impl ZooKeeperProvider {
    fn acls(&self) -> Acls<'static> {
        match self.options.acl {
            ZooKeeperAcl::Open => Acls::anyone_all(),
            ZooKeeperAcl::CreatorAll => Acls::creator_all(),
            ZooKeeperAcl::CreatorAllWorldRead => Acls::new(&CREATOR_ALL_WORLD_READ),
        }
    }

    /// Runs a client call (made anew for each try) on this thread, retrying after connection
    /// losses within `deadline`; returns the client's own result for the caller to inspect.
    pub(super) fn run<T, F, Fut>(
        &self,
        session: &Session,
        operation: &'static str,
        deadline: Instant,
        call: F,
    ) -> Result<std::result::Result<T, ZkError>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<T, ZkError>>,
    {
        let mut tries = self.options.retries.saturating_add(1);
        loop {
            let result = self.sessions.call(session, operation, deadline, call())?;
            match result {
                Err(ZkError::ConnectionLoss)
                    if tries > 1 && Instant::now() + self.options.retry_delay < deadline =>
                {
                    tries -= 1;
                    std::thread::sleep(self.options.retry_delay);
                }
                other => return Ok(other),
            }
        }
    }

    /// Creates `path` and its parents as persistent nodes (with the provider's ACL),
    /// ignoring those that exist — also those we may not create under (ZooKeeper checks the
    /// parent's CREATE permission before it looks for the node, so an existing chroot under a
    /// locked-down parent answers "no auth").
    fn ensure_path(&self, session: &Session, path: &str, deadline: Instant) -> Result<()> {
        let options = CreateMode::Persistent.with_acls(self.acls());
        let mut at = String::new();
        for seg in path[1..].split('/') {
            at.push('/');
            at.push_str(seg);
            let r = self.run(session, "create path", deadline, || {
                session.client.create(&at, &[], &options)
            })?;
            match r {
                Ok(_) | Err(ZkError::NodeExists) => {}
                Err(ZkError::NoAuth) => {
                    let exists = self.run(session, "create path", deadline, || {
                        session.client.check_stat(&at)
                    })?;
                    if !matches!(exists, Ok(Some(_))) {
                        return Err(map_err("create path", ZkError::NoAuth));
                    }
                }
                Err(e) => return Err(map_err("create path", e)),
            }
        }
        Ok(())
    }

    /// `queue` without the nodes other than `ours` that carry our name prefix, deleting them
    /// (see `try_acquire`).
    pub(super) fn drop_orphans(
        &self,
        session: &Session,
        group: &str,
        ours: &str,
        queue: Vec<String>,
        deadline: Instant,
    ) -> Result<Vec<String>> {
        let Some((guid, _)) = ours.split_once("-n_") else {
            return Ok(queue);
        };
        let prefix = format!("{guid}-n_");
        let mut kept = Vec::with_capacity(queue.len());
        for name in queue {
            if name != ours && name.starts_with(&prefix) {
                log::debug!("zookeeper: deleting an orphaned election node of ours in {group:?}");
                self.delete(
                    session,
                    &format!("{}/{name}", self.group_path(group)),
                    deadline,
                )?;
            } else {
                kept.push(name);
            }
        }
        Ok(kept)
    }

    /// Deletes a node by path with the current session (whatever session created it).
    pub(super) fn delete(&self, session: &Session, path: &str, deadline: Instant) -> Result<()> {
        match self.run(session, "delete node", deadline, || {
            session.client.delete(path, None)
        })? {
            Ok(()) | Err(ZkError::NoNode) => Ok(()),
            Err(e) => Err(map_err("delete node", e)),
        }
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
            self.delete(session, &n.path, deadline)?;
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
        let options = CreateMode::EphemeralSequential.with_acls(self.acls());
        let client = &session.client;
        let created = self.run(session, "create node", deadline, || async {
            let children = match client.list_children(&group_path).await {
                Ok(c) => c,
                Err(ZkError::NoNode) => Vec::new(),
                Err(e) => return Err(e),
            };
            if let Some(c) = children.iter().find(|c| c.starts_with(&guid)) {
                // Created by a try whose reply was lost: adopt it.
                let path = format!("{group_path}/{c}");
                return match client.check_stat(&path).await? {
                    Some(stat) => Ok((path, stat)),
                    None => Err(ZkError::ConnectionLoss), // gone again: try anew
                };
            }
            let (stat, seq) = client.create(&prefix, &record, &options).await?;
            Ok((format!("{prefix}{seq}"), stat))
        })?;
        let (path, stat) = match created {
            Ok(c) => c,
            Err(ZkError::NoNode) => {
                self.pending.lock().remove(&key);
                if self.options.create_root {
                    // The group node was deleted since we created it: recreate it next time.
                    self.ensured.lock().remove(&group_path);
                    return Err(Error::Backend {
                        backend: BACKEND,
                        operation: "create node",
                        transient: true,
                        source: Box::new(ZkError::NoNode),
                    });
                }
                return Err(Error::config(
                    "root_path",
                    format!("{group_path} does not exist and create_root is off; create it first"),
                ));
            }
            Err(e) => return Err(map_err("create node", e)),
        };
        self.pending.lock().remove(&key);
        if stat.ephemeral_owner != session.client.session_id().0 {
            return Err(unavailable(
                "our new election node belongs to another session",
            ));
        }
        let node = Node {
            path,
            version: stat.version,
            czxid: stat.czxid,
            generation: session.generation,
            leased: false,
        };
        // A twin elector (same id, same provider) may have created and recorded a node
        // meanwhile: keep that one (it may be leased) and delete ours, so a participant has
        // one node.
        let twin = {
            let mut nodes = self.nodes.lock();
            match nodes.get(&key) {
                Some(n) if n.generation == session.generation && n.path != node.path => {
                    Some(n.clone())
                }
                _ => {
                    nodes.insert(key, node.clone());
                    None
                }
            }
        };
        if let Some(twin) = twin {
            self.delete(session, &node.path, deadline)?;
            return Ok(twin);
        }
        Ok(node)
    }

    /// Confirms, in one round trip, that `node` still exists as created and that its session
    /// is alive at the ensemble's leader: a multi-operation that checks our node's version and
    /// writes (an empty `setData`) the group node. Only the leader commits a multi, only for a
    /// live session, and all or nothing — a server cut off from the quorum could still answer
    /// reads. Node names are unique (a random prefix chosen by this provider and a sequence
    /// number) and the node is ephemeral, created by this session: its existence means it is
    /// ours. The write goes to the group node, not to ours: our successor watches our node,
    /// and a write to it would wake that follower at every renew.
    pub(super) fn confirm(
        &self,
        session: &Session,
        group: &str,
        node: &Node,
        deadline: Instant,
    ) -> Result<bool> {
        let gp = self.group_path(group);
        let client = &session.client;
        let r = self.run(session, "confirm node", deadline, || {
            let mut multi = client.new_multi_writer();
            let added = multi
                .add_check_version(&node.path, node.version)
                .and_then(|()| multi.add_set_data(&gp, &[], None));
            async move {
                added?;
                multi.commit().await.map_err(ZkError::from)
            }
        })?;
        match r {
            Ok(_) => Ok(true),
            Err(ZkError::NoNode | ZkError::BadVersion) => Ok(false),
            Err(e) => Err(map_err("confirm node", e)),
        }
    }

    /// Reads a node's record, with its czxid as the token; `None` if it is gone.
    pub(super) fn read_info(
        &self,
        session: &Session,
        group: &str,
        path: &str,
        deadline: Instant,
    ) -> Result<Option<LeaderInfo>> {
        let (bytes, stat) = match self.run(session, "read node", deadline, || {
            session.client.get_data(path)
        })? {
            Ok(d) => d,
            Err(ZkError::NoNode) => return Ok(None),
            Err(e) => return Err(map_err("read node", e)),
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
        let mut children = match self.run(session, "list nodes", deadline, || {
            session.client.list_children(&gp)
        })? {
            Ok(c) => c,
            Err(ZkError::NoNode) => Vec::new(),
            Err(e) => return Err(map_err("list nodes", e)),
        };
        children.retain(|c| c.contains("-n_"));
        children.sort_by_key(|c| seq(c));
        Ok(children)
    }

    /// Watches `path` (our predecessor) once per session: waking `group`'s electors when it
    /// changes or the session ends. Returns whether it still exists. `successor_of_head` is
    /// our node's path if the predecessor is the head of the queue: its deletion then makes
    /// our node the head (recorded in `head_gone`, so the woken campaign skips the listing).
    pub(super) fn watch_predecessor(
        &self,
        session: &Session,
        group: &str,
        path: String,
        successor_of_head: Option<String>,
        deadline: Instant,
    ) -> Result<bool> {
        let key = (session.generation, path.clone());
        if self.watched.lock().contains(&key) {
            return Ok(true);
        }
        let (stat, watcher) = match self.run(session, "watch predecessor", deadline, || {
            session.client.check_and_watch_stat(&path)
        })? {
            Ok(r) => r,
            Err(e) => return Err(map_err("watch predecessor", e)),
        };
        if stat.is_none() {
            return Ok(false);
        }
        self.watched.lock().insert(key.clone());
        let (watchers, watched, head_gone, g) = (
            self.watchers.clone(),
            self.watched.clone(),
            self.head_gone.clone(),
            group.to_owned(),
        );
        let generation = session.generation;
        self.runtime.spawn("predecessor watch", async move {
            // Fires on deletion, a data change, or the end of the session.
            let event = watcher.changed().await;
            if event.event_type == EventType::NodeDeleted
                && let Some(ours) = successor_of_head
            {
                head_gone.lock().insert((generation, ours));
            }
            watched.lock().remove(&key);
            watchers.wake(&g);
        });
        Ok(true)
    }

    /// Deletes our node for (group, participant), whatever session created it, and forgets it.
    pub(super) fn forget(&self, key: &(String, String), deadline: Instant) -> Result<()> {
        let node = self.nodes.lock().get(key).cloned();
        let pending = self.pending.lock().get(key).cloned();
        if node.is_none() && pending.is_none() {
            return Ok(());
        }
        // A node of a session that is over needs no delete (it is ephemeral): forget it even
        // while no session can be had, so that a release after an outage does not fail.
        let over = |generation: u64| self.sessions.over(generation);
        if node.as_ref().is_none_or(|n| over(n.generation))
            && pending.as_ref().is_none_or(|(_, g)| over(*g))
        {
            self.nodes.lock().remove(key);
            self.pending.lock().remove(key);
            return Ok(());
        }
        let session = self.sessions.session(deadline)?;
        if let Some(n) = node {
            self.delete(&session, &n.path, deadline)?;
        }
        if let Some((guid, generation)) = pending
            && generation == session.generation
        {
            for name in self.queue(&session, &key.0, deadline)? {
                if name.starts_with(&guid) {
                    let path = format!("{}/{name}", self.group_path(&key.0));
                    self.delete(&session, &path, deadline)?;
                }
            }
        }
        if let Some(n) = self.nodes.lock().remove(key) {
            self.head_gone.lock().remove(&(n.generation, n.path));
        }
        self.pending.lock().remove(key);
        Ok(())
    }
}

/// The sequence number at the end of a node name (10 or 19 digits).
pub(super) fn seq(name: &str) -> u64 {
    name.rsplit("-n_")
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}
