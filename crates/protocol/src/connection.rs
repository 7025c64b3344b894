//! A framed connection with typed send and receive methods and the handshake for each role.

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use crate::task::TaskSpec;
use crate::{Frame, FrameCodec, Message, PROTOCOL_VERSION, ProtocolError};

/// What arrives on a connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Message(Message),
    Data { stream: u32, bytes: Bytes },
}

/// One end of the agent socket.
#[derive(Debug)]
pub struct Connection<T> {
    framed: Framed<T, FrameCodec>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    pub fn new(io: T, codec: FrameCodec) -> Connection<T> {
        Connection {
            framed: Framed::new(io, codec),
        }
    }

    /// The largest data chunk one [`Connection::send_data`] call accepts.
    pub fn max_data_chunk(&self) -> usize {
        self.framed.codec().max_data_chunk()
    }

    pub async fn send(&mut self, message: &Message) -> Result<(), ProtocolError> {
        send_message(&mut self.framed, message).await
    }

    /// Sends raw bytes of `stream`, split into as many frames as needed.
    pub async fn send_data(&mut self, stream: u32, bytes: Bytes) -> Result<(), ProtocolError> {
        let chunk = self.max_data_chunk();
        send_data(&mut self.framed, chunk, stream, bytes).await
    }

    /// The next frame, or `None` on a clean end of stream.
    pub async fn recv(&mut self) -> Result<Option<Incoming>, ProtocolError> {
        recv(&mut self.framed).await
    }

    /// Splits the connection into a reading and a writing half, for a side that must keep
    /// reading while a write waits (the launch-agent's relay: a download's data waits for the
    /// task-agent to read while the relay goes on reading that task-agent's logs). Bytes already
    /// read and buffered stay with the reading half.
    pub fn split(self) -> (ConnectionReader<T>, ConnectionWriter<T>) {
        let max_chunk = self.max_data_chunk();
        let (sink, stream) = self.framed.split();
        (
            ConnectionReader { stream },
            ConnectionWriter { sink, max_chunk },
        )
    }

    async fn recv_message(&mut self, expected: &'static str) -> Result<Message, ProtocolError> {
        match self.recv().await? {
            None => Err(ProtocolError::Closed(expected)),
            Some(Incoming::Message(message)) => Ok(message),
            Some(Incoming::Data { stream, .. }) => Err(ProtocolError::UnexpectedMessage {
                expected,
                received: format!("data frame for stream {stream}"),
            }),
        }
    }

    /// task-agent side: say hello, get the task.
    pub async fn handshake_as_task_agent(
        &mut self,
        agent_version: &str,
    ) -> Result<TaskSpec, ProtocolError> {
        self.handshake_as_task_agent_with_token(agent_version, None)
            .await
    }

    /// task-agent side, presenting the one-time `token` it was given (command-prefix mode).
    pub async fn handshake_as_task_agent_with_token(
        &mut self,
        agent_version: &str,
        token: Option<&str>,
    ) -> Result<TaskSpec, ProtocolError> {
        self.send(&Message::Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: agent_version.to_owned(),
            token: token.map(str::to_owned),
        })
        .await?;
        match self.recv_message("welcome").await? {
            Message::Welcome { task } => Ok(*task),
            Message::Refused { reason } => Err(ProtocolError::Refused(reason)),
            other => Err(ProtocolError::UnexpectedMessage {
                expected: "welcome",
                received: other.kind().to_owned(),
            }),
        }
    }

    /// launch-agent side: check the hello and hand over the task. Returns the peer's agent version.
    pub async fn handshake_as_launch_agent(
        &mut self,
        task: &TaskSpec,
    ) -> Result<String, ProtocolError> {
        self.handshake_as_launch_agent_expecting(task, None).await
    }

    /// launch-agent side; with `expected_token`, the hello must carry exactly that token.
    pub async fn handshake_as_launch_agent_expecting(
        &mut self,
        task: &TaskSpec,
        expected_token: Option<&str>,
    ) -> Result<String, ProtocolError> {
        match self.recv_message("hello").await? {
            Message::Hello {
                protocol_version,
                agent_version,
                token,
            } => {
                if let Some(expected) = expected_token {
                    let presented = token.as_deref().unwrap_or("");
                    if !constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
                        let reason = "the task-agent did not present this task's token".to_owned();
                        let _ = self
                            .send(&Message::Refused {
                                reason: reason.clone(),
                            })
                            .await;
                        return Err(ProtocolError::Refused(reason));
                    }
                }
                if protocol_version != PROTOCOL_VERSION {
                    let err = ProtocolError::WrongVersion {
                        peer: protocol_version,
                        ours: PROTOCOL_VERSION,
                    };
                    // Best effort: the peer may already be gone.
                    let _ = self
                        .send(&Message::Refused {
                            reason: err.to_string(),
                        })
                        .await;
                    return Err(err);
                }
                self.send(&Message::Welcome {
                    task: Box::new(task.clone()),
                })
                .await?;
                Ok(agent_version)
            }
            other => Err(ProtocolError::UnexpectedMessage {
                expected: "hello",
                received: other.kind().to_owned(),
            }),
        }
    }
}

/// The reading half of a [`Connection::split`].
#[derive(Debug)]
pub struct ConnectionReader<T> {
    stream: SplitStream<Framed<T, FrameCodec>>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> ConnectionReader<T> {
    /// The next frame, or `None` on a clean end of stream.
    pub async fn recv(&mut self) -> Result<Option<Incoming>, ProtocolError> {
        recv(&mut self.stream).await
    }
}

/// The writing half of a [`Connection::split`].
#[derive(Debug)]
pub struct ConnectionWriter<T> {
    sink: SplitSink<Framed<T, FrameCodec>, Frame>,
    max_chunk: usize,
}

impl<T: AsyncRead + AsyncWrite + Unpin> ConnectionWriter<T> {
    pub async fn send(&mut self, message: &Message) -> Result<(), ProtocolError> {
        send_message(&mut self.sink, message).await
    }

    /// Sends raw bytes of `stream`, split into as many frames as needed.
    pub async fn send_data(&mut self, stream: u32, bytes: Bytes) -> Result<(), ProtocolError> {
        send_data(&mut self.sink, self.max_chunk, stream, bytes).await
    }
}

async fn send_message<S>(sink: &mut S, message: &Message) -> Result<(), ProtocolError>
where
    S: Sink<Frame, Error = ProtocolError> + Unpin,
{
    let json = serde_json::to_vec(message)?;
    sink.send(Frame::Control(Bytes::from(json))).await
}

async fn send_data<S>(
    sink: &mut S,
    chunk: usize,
    stream: u32,
    mut bytes: Bytes,
) -> Result<(), ProtocolError>
where
    S: Sink<Frame, Error = ProtocolError> + Unpin,
{
    while !bytes.is_empty() {
        let piece = bytes.split_to(bytes.len().min(chunk));
        sink.feed(Frame::Data {
            stream,
            bytes: piece,
        })
        .await?;
    }
    sink.flush().await
}

async fn recv<S>(stream: &mut S) -> Result<Option<Incoming>, ProtocolError>
where
    S: Stream<Item = Result<Frame, ProtocolError>> + Unpin,
{
    match stream.next().await {
        None => Ok(None),
        Some(Err(err)) => Err(err),
        Some(Ok(Frame::Control(json))) => {
            Ok(Some(Incoming::Message(serde_json::from_slice(&json)?)))
        }
        Some(Ok(Frame::Data { stream, bytes })) => Ok(Some(Incoming::Data { stream, bytes })),
    }
}

/// Compares without an early exit, so timing does not tell how much of a token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;

    use super::*;
    use crate::task::{RunStep, Step, When};

    fn task() -> TaskSpec {
        TaskSpec {
            task_id: "t1".into(),
            job_id: "j1".into(),
            job_name: "build".into(),
            build_num: 1,
            pipeline_id: "p".into(),
            pipeline_number: 1,
            workflow_id: "w".into(),
            project_slug: "local/org/repo".into(),
            repository_url: "/tmp/repo".into(),
            branch: Some("main".into()),
            tag: None,
            revision: "0".repeat(40),
            parallel_index: 0,
            parallel_total: 1,
            environment: BTreeMap::new(),
            working_directory: None,
            shell: None,
            steps: vec![Step::Run(RunStep {
                name: "hi".into(),
                command: "echo hi".into(),
                shell: None,
                environment: BTreeMap::new(),
                working_directory: None,
                background: false,
                no_output_timeout_secs: None,
                max_auto_reruns: 0,
                auto_rerun_delay_secs: 0,
                when: When::OnSuccess,
            })],
            secrets: Default::default(),
            checkout_auth: None,
            ssh_keys: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_split_connection_reads_while_a_write_waits_and_keeps_buffered_frames() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut launch = Connection::new(a, FrameCodec::default());
        let mut agent = Connection::new(b, FrameCodec::default());
        let spec = task();
        let handshake = tokio::spawn(async move {
            launch.handshake_as_launch_agent(&spec).await.unwrap();
            launch
        });
        agent.handshake_as_task_agent("1").await.unwrap();
        // Sent before the split: these frames may already sit in the reader's buffer.
        for step in 0..3 {
            agent
                .send(&Message::StepStarted {
                    step,
                    name: format!("s{step}"),
                    log: step + 1,
                })
                .await
                .unwrap();
        }
        let launch = handshake.await.unwrap();
        let (mut reader, mut writer) = launch.split();
        // The agent reads nothing, so a large write fills the socket and waits; reading the
        // other way still works meanwhile.
        let big = Bytes::from(vec![7u8; 8 << 20]);
        let write = tokio::spawn(async move {
            writer.send_data(9, big).await.unwrap();
            writer
        });
        for step in 0..3 {
            match reader.recv().await.unwrap() {
                Some(Incoming::Message(Message::StepStarted { step: got, .. })) => {
                    assert_eq!(got, step)
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(!write.is_finished(), "8 MiB cannot fit in a socket buffer");
        let mut received = 0;
        while received < 8 << 20 {
            match agent.recv().await.unwrap() {
                Some(Incoming::Data { stream: 9, bytes }) => received += bytes.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut writer = write.await.unwrap();
        writer
            .send(&Message::NotFound { stream: 10 })
            .await
            .unwrap();
        assert_eq!(
            agent.recv().await.unwrap(),
            Some(Incoming::Message(Message::NotFound { stream: 10 }))
        );
    }

    #[tokio::test]
    async fn handshake_then_data_over_a_real_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut launch = Connection::new(a, FrameCodec::default());
        let mut agent = Connection::new(b, FrameCodec::default());
        let spec = task();
        let expected = spec.clone();
        let server = tokio::spawn(async move {
            let version = launch.handshake_as_launch_agent(&spec).await.unwrap();
            let mut got = Vec::new();
            loop {
                match launch.recv().await.unwrap() {
                    Some(Incoming::Data { stream, bytes }) => {
                        assert_eq!(stream, 3);
                        got.extend_from_slice(&bytes);
                    }
                    Some(Incoming::Message(Message::TaskFinished { .. })) => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            (version, got)
        });
        assert_eq!(
            agent.handshake_as_task_agent("9.9.9").await.unwrap(),
            expected
        );
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        agent
            .send_data(3, Bytes::from(payload.clone()))
            .await
            .unwrap();
        agent
            .send(&Message::TaskFinished {
                status: crate::TaskStatus::Success,
            })
            .await
            .unwrap();
        let (version, got) = server.await.unwrap();
        assert_eq!(version, "9.9.9");
        assert_eq!(got, payload);
    }

    #[tokio::test]
    async fn a_frame_over_the_receivers_bound_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut launch = Connection::new(a, FrameCodec::default());
        let mut agent = Connection::new(b, FrameCodec::new(64));
        let spec = task();
        tokio::spawn(async move { launch.handshake_as_launch_agent(&spec).await });
        assert!(matches!(
            agent.handshake_as_task_agent("9.9.9").await,
            Err(ProtocolError::FrameTooLarge { max: 64, .. })
        ));
    }

    #[tokio::test]
    async fn wrong_version_is_refused_with_a_reason() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut launch = Connection::new(a, FrameCodec::default());
        let mut agent = Connection::new(b, FrameCodec::default());
        let server = tokio::spawn(async move { launch.handshake_as_launch_agent(&task()).await });
        agent
            .send(&Message::Hello {
                protocol_version: PROTOCOL_VERSION + 1,
                agent_version: "x".into(),
                token: None,
            })
            .await
            .unwrap();
        match agent.recv().await.unwrap() {
            Some(Incoming::Message(Message::Refused { reason })) => {
                let peer = PROTOCOL_VERSION + 1;
                assert!(
                    reason.contains(&format!("protocol version {peer}")),
                    "{reason}"
                );
            }
            other => panic!("expected refused, got {other:?}"),
        }
        match server.await.unwrap() {
            Err(ProtocolError::WrongVersion { peer, ours }) => {
                assert_eq!((peer, ours), (PROTOCOL_VERSION + 1, PROTOCOL_VERSION));
            }
            other => panic!("expected WrongVersion, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_and_truncation_are_errors_not_panics() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut launch = Connection::new(a, FrameCodec::default());
        b.write_all(&[0, 0, 0, 4, 1, b'{', b'x']).await.unwrap();
        drop(b);
        assert!(matches!(
            launch.recv().await,
            Err(ProtocolError::Truncated(7))
        ));

        let (a, mut b) = UnixStream::pair().unwrap();
        let mut launch = Connection::new(a, FrameCodec::default());
        b.write_all(&[0, 0, 0, 3, 1, b'{', b'x']).await.unwrap();
        assert!(matches!(
            launch.recv().await,
            Err(ProtocolError::BadMessage(_))
        ));
    }

    #[tokio::test]
    async fn a_wrong_one_time_token_is_refused() {
        for (presented, accepted) in [
            (Some("s3cret"), true),
            (Some("guess!"), false),
            (None, false),
        ] {
            let (a, b) = UnixStream::pair().unwrap();
            let mut launch = Connection::new(a, FrameCodec::default());
            let mut agent = Connection::new(b, FrameCodec::default());
            let server = tokio::spawn(async move {
                launch
                    .handshake_as_launch_agent_expecting(&task(), Some("s3cret"))
                    .await
            });
            let got = agent
                .handshake_as_task_agent_with_token("1", presented)
                .await;
            assert_eq!(got.is_ok(), accepted, "{presented:?}: {got:?}");
            assert_eq!(server.await.unwrap().is_ok(), accepted);
        }
    }
}
