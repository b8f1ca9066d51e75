using System.Buffers.Binary;
using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Drydock.Nbd.Server;
using Drydock.Nbd.Tests.TestSupport;
using Xunit;
using static Drydock.Nbd.Tests.TestSupport.TestCancellation;

namespace Drydock.Nbd.Tests.Server;

/// <summary>STARTTLS against the in-tree server, with certificates made in the test.</summary>
public sealed class NbdServerTlsTests : IClassFixture<NbdServerTlsTests.Pki>
{
    private readonly TestCertificates _certificates;

    public NbdServerTlsTests(Pki pki)
    {
        _certificates = pki.Certificates;
    }

    [Theory]
    [InlineData(TestTransport.Unix)]
    [InlineData(TestTransport.Tcp)]
    [InlineData(TestTransport.InProcess)]
    public async Task TLS_required_by_both_sides_encrypts_and_round_trips(TestTransport transport)
    {
        await using var server = TestServer.Start(options => RequireTls(options));
        await using var client = await server.ConnectAsync(transport, options: ClientOptions(NbdContexts.BaseAllocation));
        var data = NbdServerRoundTripTests.Random(70_000, seed: 9);

        await client.WriteAsync(4096, data, cancellationToken: Ct);
        var back = new byte[data.Length];
        await client.ReadAsync(4096, back, cancellationToken: Ct);

        Assert.True(client.Export.Tls);
        Assert.True(client.Export.StructuredReplies);
        Assert.Equal([NbdContexts.BaseAllocation], client.Export.MetaContexts);
        Assert.Equal(data, back);
    }

    [Fact]
    public async Task TLS_over_tcp_checks_the_host_name_in_the_certificate()
    {
        await using var server = TestServer.Start(options => RequireTls(options));
        var options = ClientOptions();
        options.Tls!.HostName = "localhost";

        await using var client = await server.ConnectAsync(TestTransport.Tcp, options: options);

        Assert.True(client.Export.Tls);
    }

    [Fact]
    public async Task Server_that_requires_TLS_refuses_a_client_without_it()
    {
        await using var server = TestServer.Start(options => RequireTls(options));

        await Assert.ThrowsAsync<NbdTlsException>(() => server.ConnectAsync(TestTransport.Unix));
    }

    [Fact]
    public async Task Server_that_requires_TLS_answers_TLS_REQD_to_every_option_before_STARTTLS()
    {
        await using var server = TestServer.Start(options => RequireTls(options), listen: false);
        await using var raw = new RawNbdConnection(await server.Server.ConnectInProcessAsync(Ct));
        await raw.StartAsync();

        foreach (var option in new[] { NbdOption.List, NbdOption.StructuredReply, NbdOption.Info, NbdOption.Go, (NbdOption)42 })
        {
            await raw.SendOptionAsync(option, option is NbdOption.Info or NbdOption.Go ? NbdHandshakeCodec.BuildExportInfoRequest("disk", []) : default);
            var (header, _) = await raw.ReadReplyAsync();
            Assert.Equal(NbdOptionReplyType.ErrTlsRequired, header.ReplyType);
        }

        // NBD_OPT_EXPORT_NAME cannot be refused, so the server hangs up.
        await raw.SendOptionAsync(NbdOption.ExportName, "disk"u8.ToArray());
        Assert.True(await raw.ServerClosedAsync());
    }

    [Fact]
    public async Task Client_that_requires_TLS_is_refused_and_sends_nothing_in_plaintext_after_the_refusal()
    {
        var server = TestServer.Start(listen: false);
        var (clientEnd, serverEnd) = InProcessStreamPair();
        var recording = new RecordingStream(serverEnd);
        try
        {
            var session = server.Server.ServeAsync(recording, Ct);
            await Assert.ThrowsAsync<NbdTlsException>(() =>
                NbdClient.ConnectAsync(_ => ValueTask.FromResult(clientEnd), "disk", ClientOptions(), Ct));
            await session.WaitAsync(TimeSpan.FromSeconds(10), Ct);
        }
        finally
        {
            await server.DisposeAsync();
        }

        // Client flags, then the STARTTLS option, and not one byte more.
        var received = recording.BytesRead;
        Assert.Equal(NbdSizes.ClientFlags + NbdSizes.OptionHeader, received.Length);
        Assert.Equal((uint)NbdOption.StartTls, BinaryPrimitives.ReadUInt32BigEndian(received.AsSpan(NbdSizes.ClientFlags + 8)));
    }

    [Fact]
    public async Task Certificate_from_an_untrusted_CA_is_refused()
    {
        await using var server = TestServer.Start(options => RequireTls(options, _certificates.ServerFromOtherCa));

        await Assert.ThrowsAsync<NbdTlsException>(() => server.ConnectAsync(TestTransport.Unix, options: ClientOptions()));
    }

    [Fact]
    public async Task Expired_certificate_is_refused()
    {
        await using var server = TestServer.Start(options => RequireTls(options, _certificates.ExpiredServer));

        await Assert.ThrowsAsync<NbdTlsException>(() => server.ConnectAsync(TestTransport.Unix, options: ClientOptions()));
    }

    [Fact]
    public async Task Certificate_for_another_host_name_is_refused()
    {
        await using var server = TestServer.Start(options => RequireTls(options));
        var options = ClientOptions();
        options.Tls!.HostName = "backup.example.com";

        await Assert.ThrowsAsync<NbdTlsException>(() => server.ConnectAsync(TestTransport.Tcp, options: options));
    }

    [Fact]
    public async Task Client_certificate_signed_by_the_trusted_CA_is_accepted()
    {
        await using var server = TestServer.Start(options => RequireClientCertificate(options));
        var options = ClientOptions();
        options.Tls!.ClientCertificate = _certificates.Client;

        await using var client = await server.ConnectAsync(TestTransport.Unix, options: options);
        await client.WriteAsync(0, new byte[] { 42 }, cancellationToken: Ct);

        Assert.True(client.Export.Tls);
    }

    [Fact]
    public async Task Client_without_a_certificate_is_refused_when_the_server_requires_one()
    {
        await using var server = TestServer.Start(options => RequireClientCertificate(options));

        // With TLS 1.3 the client finishes its handshake before the server checks the certificate; the client
        // still reports the refusal as a TLS error, not as a mysterious closed connection.
        var error = await Assert.ThrowsAsync<NbdTlsException>(() => server.ConnectAsync(TestTransport.Unix, options: ClientOptions()));
        Assert.Contains("certificate", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Client_certificate_from_another_CA_is_refused()
    {
        await using var server = TestServer.Start(options => RequireClientCertificate(options));
        var options = ClientOptions();
        options.Tls!.ClientCertificate = _certificates.ServerFromOtherCa;

        await Assert.ThrowsAsync<NbdTlsException>(() => server.ConnectAsync(TestTransport.Unix, options: options));
    }

    [Fact]
    public async Task Server_with_optional_TLS_serves_plaintext_and_TLS_clients()
    {
        await using var server = TestServer.Start(options => options.Certificate = _certificates.Server);

        await using var plain = await server.ConnectAsync(TestTransport.Unix);
        await using var encrypted = await server.ConnectAsync(TestTransport.Unix, options: ClientOptions());

        Assert.False(plain.Export.Tls);
        Assert.True(encrypted.Export.Tls);
    }

    private static (Stream Client, Stream Server) InProcessStreamPair()
    {
        var (client, server) = SocketPair.Create();
        return (client, server);
    }

    private void RequireTls(NbdServerOptions options, System.Security.Cryptography.X509Certificates.X509Certificate2? certificate = null)
    {
        options.Certificate = certificate ?? _certificates.Server;
        options.RequireTls = true;
    }

    private void RequireClientCertificate(NbdServerOptions options)
    {
        RequireTls(options);
        options.RequireClientCertificate = true;
        options.TrustedClientRoots = _certificates.Trust;
    }

    private NbdClientOptions ClientOptions(params string[] contexts)
    {
        var options = TestServer.Options(contexts);
        options.Tls = new NbdTlsOptions { TrustedRoots = _certificates.Trust };
        return options;
    }

    /// <summary>One PKI for the class: key generation is the slow part.</summary>
    public sealed class Pki : IDisposable
    {
        public TestCertificates Certificates { get; } = TestCertificates.Create();

        public void Dispose() => Certificates.Dispose();
    }
}
