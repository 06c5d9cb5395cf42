//! The full history in a real browser at phone width (360 px): 25 movements make two pages of
//! `/transactions`, walked with the pager's links forward and back.

use crate::browser::{Browser, PHONE};
use crate::flows::{balance_minor, log_in};
use crate::helpers::{deposit, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_forward_and_back_on_a_phone() {
    let app = spawn_app().await;
    let henrik = app.customer("henrik").await;
    let (user_id,): (i64,) = sqlx::query_as("SELECT id FROM users WHERE username_key = $1")
        .bind("henrik")
        .fetch_one(app.services.db.pool())
        .await
        .expect("henrik's id");
    for _ in 0..25 {
        deposit(&app.services, alphabank::domain::UserId::new(user_id), "1").await;
    }

    let mut b = Browser::launch(&app.base, &app.dir.path().join("tls-cert.pem"), 40, PHONE).await;
    b.open("/login").await;
    assert_eq!(b.viewport_width().await, u64::from(PHONE.0), "phone width");
    let code = henrik.next_code().await;
    log_in(
        &mut b,
        &henrik.email,
        &henrik.password,
        &code,
        "phone-login",
    )
    .await;
    assert_eq!(balance_minor(&b).await, 2_500);
    assert!(
        !b.all(".txn").await.is_empty(),
        "home lists recent movements"
    );
    b.shot("phone-home").await;

    b.click("a[href=\"/transactions\"]").await;
    b.wait_for_location("/transactions").await;
    assert_rows(&b, 20).await;
    assert!(
        b.all("a[href=\"/transactions?page=0\"]").await.is_empty(),
        "no link before the first page"
    );
    b.shot("phone-history-page-1").await;

    b.click("a[href=\"/transactions?page=2\"]").await;
    b.wait_for_location("/transactions?page=2").await;
    assert_rows(&b, 5).await;
    assert!(
        b.all("a[href=\"/transactions?page=3\"]").await.is_empty(),
        "no link past the last page"
    );
    b.shot("phone-history-page-2").await;

    b.click("a[href=\"/transactions?page=1\"]").await;
    b.wait_for_location("/transactions?page=1").await;
    assert_rows(&b, 20).await;
    b.shot("phone-history-back-to-page-1").await;
    b.finish().await;
}

/// The page lists `n` movements of +1,00 kr each.
async fn assert_rows(b: &Browser, n: usize) {
    b.wait_for(".txn").await;
    let rows = b.all(".txn").await;
    assert_eq!(rows.len(), n, "{}", b.body_text().await);
    for row in rows {
        assert_eq!(
            row.attr("data-minor").await.unwrap().as_deref(),
            Some("100")
        );
    }
}
