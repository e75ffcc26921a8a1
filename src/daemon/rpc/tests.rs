use super::*;
use crate::test_data::XorShift;

fn call(body: &str) -> Call {
    parse_request(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e:?}")).call
}

fn error(body: &str) -> String {
    match parse_request(body.as_bytes()) {
        Ok(r) => panic!("{body} parsed as {r:?}"),
        Err(e) => e.result,
    }
}

const HASH: &str = "0123456789abcdef0123456789abcdef01234567";

/// Requests as transmission-remote 3.00 sends them (captured with a stub server).
#[test]
fn transmission_remote_requests_parse() {
    let r = parse_request(br#"{"arguments":{"fields":["error","errorString","eta","id","isFinished","leftUntilDone","name","peersGettingFromUs","peersSendingToUs","rateDownload","rateUpload","sizeWhenDone","status","uploadRatio"]},"method":"torrent-get","tag":4}"#).unwrap();
    assert_eq!(r.tag, Some(json!(4)));
    let Call::TorrentGet { ids: Ids::All, fields, table: false } = r.call else { panic!("{:?}", r.call) };
    assert_eq!(fields.len(), 14);

    let meta = base64::engine::general_purpose::STANDARD.encode(b"d4:infod4:name1:aee");
    let add =
        format!(r#"{{"arguments":{{"download-dir":"/tmp/dl","metainfo":"{meta}"}},"method":"torrent-add","tag":8}}"#);
    assert_eq!(
        call(&add),
        Call::TorrentAdd {
            source: AddSource::Metainfo(b"d4:infod4:name1:aee".to_vec()),
            download_dir: Some("/tmp/dl".into()),
            paused: None
        }
    );
    let magnet = format!("magnet:?xt=urn:btih:{HASH}");
    assert_eq!(
        call(&format!(r#"{{"arguments":{{"filename":"{magnet}","paused":true}},"method":"torrent-add"}}"#)),
        Call::TorrentAdd { source: AddSource::Filename(magnet), download_dir: None, paused: Some(true) }
    );
    let one = || Ids::List(vec![TorrentRef::Id(1)]);
    assert_eq!(call(r#"{"arguments":{"ids":1},"method":"torrent-stop"}"#), Call::TorrentStop(one()));
    assert_eq!(call(r#"{"arguments":{"ids":1},"method":"torrent-start"}"#), Call::TorrentStart(one()));
    assert_eq!(call(r#"{"arguments":{"ids":1},"method":"torrent-verify"}"#), Call::TorrentVerify(one()));
    assert_eq!(call(r#"{"arguments":{},"method":"torrent-stop"}"#), Call::TorrentStop(Ids::All));
    assert_eq!(
        call(r#"{"arguments":{"delete-local-data":true,"ids":1},"method":"torrent-remove"}"#),
        Call::TorrentRemove { ids: one(), delete_local_data: true }
    );
    assert_eq!(call(r#"{"method":"session-get","tag":0}"#), Call::SessionGet);
    assert_eq!(call(r#"{"method":"session-stats","tag":1}"#), Call::SessionStats);
    assert_eq!(
        call(r#"{"arguments":{"speed-limit-down":100,"speed-limit-down-enabled":true},"method":"session-set"}"#),
        Call::SessionSet(SessionChange { speed_limit_down: Some(Some(100)), ..SessionChange::default() })
    );
    assert_eq!(
        call(r#"{"arguments":{"speed-limit-up-enabled":false},"method":"session-set"}"#),
        Call::SessionSet(SessionChange { speed_limit_up: Some(None), ..SessionChange::default() })
    );
    assert_eq!(
        call(
            r#"{"arguments":{"download-dir":"/tmp/x","peer-port":51413,"start-added-torrents":false},"method":"session-set"}"#
        ),
        Call::SessionSet(SessionChange {
            download_dir: Some("/tmp/x".into()),
            peer_port: Some(51413),
            start_added_torrents: Some(false),
            ..SessionChange::default()
        })
    );
    assert_eq!(
        call(r#"{"arguments":{"files-unwanted":[0],"ids":1},"method":"torrent-set"}"#),
        Call::TorrentSet {
            ids: one(),
            change: TorrentChange { files_unwanted: Some(vec![0]), ..TorrentChange::default() }
        }
    );
    assert_eq!(
        call(r#"{"arguments":{"downloadLimit":10,"downloadLimited":true,"ids":1},"method":"torrent-set"}"#),
        Call::TorrentSet {
            ids: one(),
            change: TorrentChange { download_limit: Some(Some(10)), ..TorrentChange::default() }
        }
    );
}

#[test]
fn ids_by_number_hash_list_or_recent_and_snake_case_methods() {
    let ids = |json: &str| match call(&format!(r#"{{"arguments":{{"ids":{json}}},"method":"torrent_start"}}"#)) {
        Call::TorrentStart(ids) => ids,
        other => panic!("{other:?}"),
    };
    let hash = parse_hash(HASH).unwrap();
    assert_eq!(ids(&format!("[3, \"{HASH}\"]")), Ids::List(vec![TorrentRef::Id(3), TorrentRef::Hash(hash)]));
    assert_eq!(ids(&format!("\"{HASH}\"")), Ids::List(vec![TorrentRef::Hash(hash)]));
    assert_eq!(ids("\"recently-active\""), Ids::RecentlyActive);
    assert_eq!(ids("[]"), Ids::All);
    assert_eq!(hash_hex(&hash), HASH);
}

#[test]
fn bad_requests_get_a_result_string_and_keep_their_tag() {
    assert!(error("{").starts_with("request is not JSON"));
    assert_eq!(error("[1]"), "request is not a JSON object");
    assert_eq!(error(r#"{"tag":1}"#), "no method name");
    assert_eq!(error(r#"{"method":"torrent-explode"}"#), "method name not recognized");
    assert_eq!(error(r#"{"method":"torrent-get","arguments":[]}"#), "arguments is not an object");
    assert_eq!(error(r#"{"method":"torrent-get","arguments":{}}"#), "torrent-get needs fields");
    assert_eq!(error(r#"{"method":"torrent-get","arguments":{"fields":"name"}}"#), "fields must be a list of names");
    assert!(error(r#"{"method":"torrent-stop","arguments":{"ids":{"a":1}}}"#).starts_with("ids must be"));
    assert_eq!(error(r#"{"method":"torrent-stop","arguments":{"ids":[-1]}}"#), "bad torrent id -1");
    assert_eq!(error(r#"{"method":"torrent-stop","arguments":{"ids":["abc"]}}"#), "bad torrent hash \"abc\"");
    assert_eq!(error(r#"{"method":"torrent-add","arguments":{}}"#), "torrent-add needs filename or metainfo");
    assert!(error(r#"{"method":"torrent-add","arguments":{"metainfo":"!!"}}"#).starts_with("metainfo is not base64"));
    assert_eq!(error(r#"{"method":"session-set","arguments":{"peer-port":70000}}"#), "peer-port must be 0 to 65535");
    assert_eq!(error(r#"{"method":"session-set","arguments":{"download-dir":5}}"#), "download-dir must be a string");
    assert_eq!(
        error(r#"{"method":"torrent-set","arguments":{"files-wanted":[1,-2]}}"#),
        "files-wanted must be a list of file indices"
    );
    let e = parse_request(br#"{"method":"nope","tag":77}"#).unwrap_err();
    assert_eq!(e.tag, Some(json!(77)));
    let body = response_body(&e.result, Value::Null, e.tag.as_ref());
    assert_eq!(body, br#"{"arguments":{},"result":"method name not recognized","tag":77}"#);
}

fn view() -> TorrentView {
    TorrentView {
        id: 1,
        hash: parse_hash(HASH).unwrap(),
        name: "photos".into(),
        status: Status::Download,
        error: 0,
        error_string: String::new(),
        download_dir: "/srv".into(),
        total_size: 1000,
        size_when_done: 800,
        left_until_done: 200,
        have_valid: 650,
        piece_count: 4,
        piece_size: 256,
        rate_download: 10,
        rate_upload: 5,
        uploaded_ever: 300,
        downloaded_ever: 600,
        corrupt_ever: 0,
        peers_connected: 2,
        peers_sending_to_us: 1,
        peers_getting_from_us: 1,
        peer_limit: 50,
        eta: 20,
        is_private: false,
        is_finished: false,
        metadata_percent_complete: 1.0,
        added_date: 1,
        start_date: 2,
        done_date: 0,
        activity_date: 3,
        seconds_downloading: 4,
        seconds_seeding: 0,
        comment: String::new(),
        creator: "toybt".into(),
        date_created: 0,
        magnet_link: format!("magnet:?xt=urn:btih:{HASH}"),
        download_limit: None,
        upload_limit: Some(100),
        files: vec![
            FileView { name: "photos/a".into(), length: 800, bytes_completed: 600, wanted: true },
            FileView { name: "photos/b".into(), length: 200, bytes_completed: 50, wanted: false },
        ],
        trackers: vec![TrackerView { announce: "udp://t.example:6969/announce".into(), tier: 0 }],
    }
}

/// transmission-remote drops a row from its listing when any field it asked for is missing: every field its `-l`,
/// `-i`, `-f` and `-it` ask for is answered.
#[test]
fn every_field_transmission_remote_asks_for_is_answered() {
    let asked = [
        "error errorString eta id isFinished leftUntilDone name peersGettingFromUs peersSendingToUs rateDownload \
         rateUpload sizeWhenDone status uploadRatio",
        "activityDate addedDate bandwidthPriority comment corruptEver creator dateCreated desiredAvailable doneDate \
         downloadDir downloadedEver downloadLimit downloadLimited error errorString eta hashString haveUnchecked \
         haveValid honorsSessionLimits id isFinished isPrivate labels leftUntilDone magnetLink name peersConnected \
         peersGettingFromUs peersSendingToUs peer-limit pieceCount pieceSize rateDownload rateUpload recheckProgress \
         secondsDownloading secondsSeeding seedRatioMode seedRatioLimit sizeWhenDone startDate status totalSize \
         uploadedEver uploadLimit uploadLimited webseeds webseedsSendingToUs",
        "files name priorities wanted",
        "trackerStats",
        "percentDone fileStats trackers metadataPercentComplete",
    ];
    let v = view();
    for list in asked {
        let fields: Vec<String> = list.split_whitespace().map(str::to_string).collect();
        let got = torrent_fields(&v, &fields);
        for f in &fields {
            assert!(got.get(f).is_some(), "{f} missing");
        }
    }
    let got = torrent_fields(&v, &["percentDone".into(), "uploadRatio".into(), "wanted".into(), "nonsense".into()]);
    assert_eq!(got, json!({"percentDone": 0.75, "uploadRatio": 0.5, "wanted": [1, 0]}));
}

#[test]
fn torrent_get_as_objects_or_table() {
    let fields: Vec<String> = vec!["id".into(), "name".into()];
    let views = [view(), TorrentView { id: 2, name: "b".into(), ..view() }];
    assert_eq!(
        torrent_get_arguments(&views, &fields, false),
        json!({"torrents": [{"id": 1, "name": "photos"}, {"id": 2, "name": "b"}]})
    );
    assert_eq!(
        torrent_get_arguments(&views, &fields, true),
        json!({"torrents": [["id", "name"], [1, "photos"], [2, "b"]]})
    );
}

#[test]
fn never_panics_on_hostile_input() {
    let valid: Vec<&[u8]> = vec![
        br#"{"arguments":{"fields":["id","name"],"ids":[1,"0123456789abcdef0123456789abcdef01234567"]},"method":"torrent-get","tag":4}"#,
        br#"{"arguments":{"files-wanted":[1,2],"downloadLimit":10,"downloadLimited":true,"ids":1},"method":"torrent-set"}"#,
        br#"{"arguments":{"metainfo":"ZDQ6aW5mb2Q0Om5hbWUxOmFlZQ==","paused":false},"method":"torrent-add"}"#,
        br#"{"arguments":{"speed-limit-down":100,"speed-limit-down-enabled":1,"peer-port":1},"method":"session-set"}"#,
    ];
    let mut rng = XorShift(0x5eed);
    for i in 0..50_000 {
        let input = if i % 10 == 0 {
            crate::test_data::bytes(rng.below(200), rng.next())
        } else {
            let pick = rng.below(valid.len());
            // Mostly JSON punctuation and digits, so the mutants stay close to JSON.
            rng.mutated(valid[pick], 6, |r| {
                let alphabet = b"{}[]\",:-0123456789aetrufnl\\ ";
                alphabet[r.below(alphabet.len())]
            })
        };
        let _ = parse_request(&input);
    }
}
