//! Order and channel checks; delivery between processes is `tests/cluster/messaging.rs`.

use super::*;

fn id(n: u128) -> NodeId {
    NodeId::from_u128(n)
}

#[test]
fn a_sender_s_messages_are_admitted_in_order_once() {
    let mut order = Order::default();
    let none = Vec::new;
    assert!(order.admit(id(1), "chat", 1, none));
    assert!(
        order.admit(id(1), "chat", 3, none),
        "a gap is a loss, not a wait"
    );
    assert!(!order.admit(id(1), "chat", 3, none), "a duplicate");
    assert!(!order.admit(id(1), "chat", 2, none), "overtaken");
    // Other senders and other channels count on their own.
    assert!(order.admit(id(2), "chat", 1, none));
    assert!(order.admit(id(1), "other", 1, none));
}

#[test]
fn order_state_is_bounded_by_current_members() {
    let mut order = Order::default();
    let members = || vec![id(1)];
    for n in 0..=PRUNE_AT as u64 {
        assert!(order.admit(id(1), &format!("c{n}"), 1, members));
    }
    assert!(order.admit(id(9), "chat", 1, members), "a sender that left");
    assert!(order.last.len() <= PRUNE_AT + 1);
    assert!(order.last.keys().all(|(sender, _)| *sender == id(1)));
}

#[tokio::test]
async fn channels_check_names_types_and_sizes() {
    let home = tempfile::tempdir().unwrap();
    let node = Node::builder()
        .name("solo")
        .home(home.path())
        .bind("127.0.0.1:0")
        .cookie("c")
        .start()
        .await
        .unwrap();
    let messaging = node.messaging();
    assert_eq!(
        messaging.channel::<u64>("").err(),
        Some(MessagingError::BadName)
    );
    let small = messaging
        .channel_with::<String>(
            "chat",
            ChannelSettings {
                max_bytes: 16,
                capacity: 4,
            },
        )
        .unwrap();
    assert!(matches!(
        messaging.channel::<u64>("chat").err(),
        Some(MessagingError::TypeMismatch { .. })
    ));
    assert!(matches!(
        small.publish(&"x".repeat(64)).await,
        Err(MessagingError::TooLarge { limit: 16, .. })
    ));
    // Alone, a message goes nowhere: not even to this node.
    let mut inbox = small.subscribe();
    let sent = small.publish(&"hi".to_owned()).await.unwrap();
    assert_eq!(
        sent,
        Published {
            delivered: 0,
            unconfirmed: 0
        }
    );
    assert!(inbox.receiver.try_recv().is_err());
    assert_eq!(messaging.stats().published, 1);
    node.shutdown().await;
}
