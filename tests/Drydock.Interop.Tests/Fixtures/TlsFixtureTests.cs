using System.Security.Cryptography.X509Certificates;
using Drydock.TestKit;
using Xunit;

namespace Drydock.Interop.Tests.Fixtures;

// Refusals of bad server certificates are checked over TCP only: libnbd 1.14 (nbdinfo) does not verify the
// server certificate at all on nbds+unix:// (no hostname to check; tls-hostname= is not in 1.14), so an
// expired, unknown-CA or wrong-hostname server is accepted there. Client-certificate checks by the server
// (verify-peer) work on both transports.
[Collection(TestPkiCollection.Name)]
public sealed class TlsFixtureTests(TestPki pki) : IDisposable
{
    private const long MiB = 1024 * 1024;

    private readonly TestDirectory _directory = TestDirectory.Create("tls-test");

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public void Dispose() => _directory.Dispose();

    [Fact]
    public void Pki_writes_the_creds_directory_layouts()
    {
        Assert.Equal(["ca-cert.pem", "server-cert.pem", "server-key.pem"], Files(pki.ServerDirectory));
        Assert.Equal(["ca-cert.pem", "client-cert.pem", "client-key.pem"], Files(pki.ClientDirectory));
        Assert.Equal(["ca-cert.pem", "client-cert.pem", "client-key.pem", "server-cert.pem", "server-key.pem"], Files(pki.CombinedDirectory));
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(pki.ServerDirectory, "server-key.pem")));
        }
    }

    [Fact]
    public void Server_certificate_chains_to_the_ca_and_names_localhost_and_loopback()
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(pki.CaCertificate);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;

        Assert.True(chain.Build(pki.ServerCertificate), string.Join("; ", chain.ChainStatus.Select(s => s.StatusInformation)));
        Assert.True(pki.ServerCertificate.MatchesHostname("localhost"));
        Assert.True(pki.ServerCertificate.MatchesHostname("127.0.0.1"));
        Assert.False(pki.ServerCertificate.MatchesHostname(TestPki.WrongHostname));
        Assert.True(pki.ClientCertificate.HasPrivateKey);
    }

    [Fact]
    public void Broken_variants_are_broken_in_the_way_they_claim()
    {
        using var expired = X509Certificate2.CreateFromPem(File.ReadAllText(Path.Combine(pki.ExpiredServerDirectory, "server-cert.pem")));
        using var wrongHost = X509Certificate2.CreateFromPem(File.ReadAllText(Path.Combine(pki.WrongHostnameServerDirectory, "server-cert.pem")));
        using var unknown = X509Certificate2.CreateFromPem(File.ReadAllText(Path.Combine(pki.UnknownCaServerDirectory, "server-cert.pem")));

        Assert.True(expired.NotAfter < TimeProvider.System.GetLocalNow().DateTime);
        Assert.False(wrongHost.MatchesHostname("localhost"));
        Assert.True(wrongHost.MatchesHostname(TestPki.WrongHostname));
        Assert.Equal(pki.OtherCaCertificate.Subject, unknown.Issuer);
        Assert.Equal(pki.CaCertificate.Subject, expired.Issuer);
    }

    [Theory]
    [InlineData(ServerTransport.Tcp)]
    [InlineData(ServerTransport.Unix)]
    public async Task Tls_qemu_nbd_is_reachable_with_certificates_and_refused_without(ServerTransport transport)
    {
        var image = await ImageAsync();
        await using var server = await QemuNbdServer.StartAsync(
            new QemuNbdOptions { ImagePath = image, ReadOnly = true, Transport = transport, TlsCredentialsDirectory = pki.ServerDirectory }, Ct);

        var info = await NbdTools.InfoAsync(server.TlsUri(pki.ClientDirectory), Ct);
        var plain = await NbdTools.RunNbdInfoAsync(["--size", server.Uri], Ct);
        var untrusted = await NbdTools.RunNbdInfoAsync(["--size", server.TlsUri(pki.UntrustedClientDirectory)], Ct);

        Assert.True(info.Tls);
        Assert.Equal(4 * MiB, info.Size);
        Assert.StartsWith(transport == ServerTransport.Tcp ? "nbds://127.0.0.1:" : "nbds+unix:///disk?socket=", server.TlsUri(pki.ClientDirectory), StringComparison.Ordinal);
        Assert.False(plain.Succeeded);
        Assert.False(untrusted.Succeeded);
    }

    [Fact]
    public async Task Tls_client_refuses_a_server_from_an_unknown_ca()
    {
        var image = await ImageAsync();
        await using var server = await QemuNbdServer.StartAsync(
            new QemuNbdOptions { ImagePath = image, ReadOnly = true, Transport = ServerTransport.Tcp, TlsCredentialsDirectory = pki.UnknownCaServerDirectory }, Ct);

        var refused = await NbdTools.RunNbdInfoAsync(["--size", server.TlsUri(pki.ClientDirectory)], Ct);

        Assert.False(refused.Succeeded);
        Assert.Contains("certificate", refused.StandardError, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Tls_client_refuses_a_server_certificate_for_another_hostname()
    {
        var image = await ImageAsync();
        await using var server = await QemuNbdServer.StartAsync(
            new QemuNbdOptions { ImagePath = image, ReadOnly = true, Transport = ServerTransport.Tcp, TlsCredentialsDirectory = pki.WrongHostnameServerDirectory }, Ct);

        var refused = await NbdTools.RunNbdInfoAsync(["--size", server.TlsUri(pki.ClientDirectory)], Ct);

        Assert.False(refused.Succeeded);
        Assert.Contains("certificate", refused.StandardError, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Qemu_nbd_refuses_to_start_with_an_expired_certificate()
    {
        var image = await ImageAsync();

        var error = await Assert.ThrowsAsync<ServiceStartException>(() => QemuNbdServer.StartAsync(
            new QemuNbdOptions { ImagePath = image, ReadOnly = true, Transport = ServerTransport.Tcp, TlsCredentialsDirectory = pki.ExpiredServerDirectory }, Ct));

        Assert.Contains("expired", error.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Nbdkit_serves_an_expired_certificate_which_the_client_refuses()
    {
        await using var good = await NbdkitServer.StartAsync(
            NbdkitOptions.Memory(MiB) with { Transport = ServerTransport.Tcp, Tls = NbdkitTls.Require, TlsCertificatesDirectory = pki.ServerDirectory }, Ct);
        await using var expired = await NbdkitServer.StartAsync(
            NbdkitOptions.Memory(MiB) with { Transport = ServerTransport.Tcp, Tls = NbdkitTls.Require, TlsCertificatesDirectory = pki.ExpiredServerDirectory }, Ct);

        var accepted = await NbdTools.RunNbdInfoAsync(["--size", good.TlsUri(pki.ClientDirectory)], Ct);
        var refused = await NbdTools.RunNbdInfoAsync(["--size", expired.TlsUri(pki.ClientDirectory)], Ct);
        var plain = await NbdTools.RunNbdInfoAsync(["--size", good.Uri], Ct);

        Assert.True(accepted.Succeeded, accepted.StandardError);
        Assert.False(refused.Succeeded);
        Assert.Contains("certificate verification", refused.StandardError, StringComparison.Ordinal);
        Assert.False(plain.Succeeded);
    }

    [Fact]
    public async Task Qsd_nbd_server_with_tls_requires_it()
    {
        await using var daemon = await QemuStorageDaemon.StartAsync(cancellationToken: Ct);
        var image = await ImageAsync();
        await daemon.AddImageNodeAsync(image, "disk0", readOnly: true, cancellationToken: Ct);
        await daemon.StartNbdServerAsync(ServerTransport.Tcp, pki.ServerDirectory, Ct);
        var uri = await daemon.AddNbdExportAsync("exp0", "disk0", "disk", cancellationToken: Ct);

        var accepted = await NbdTools.RunNbdInfoAsync(["--size", daemon.ExportTlsUri("disk", pki.ClientDirectory)], Ct);
        var plain = await NbdTools.RunNbdInfoAsync(["--size", uri], Ct);

        Assert.True(accepted.Succeeded, accepted.StandardError);
        Assert.False(plain.Succeeded);
    }

    private static string[] Files(string directory) =>
        [.. Directory.GetFiles(directory).Select(Path.GetFileName).Order(StringComparer.Ordinal)!];

    private async Task<string> ImageAsync() =>
        await QemuImage.CreateQcow2Async(_directory.File(Guid.NewGuid().ToString("N")[..8] + ".qcow2"), 4 * MiB, Ct);
}
