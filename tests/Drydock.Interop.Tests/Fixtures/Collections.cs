using Drydock.TestKit;
using Xunit;

namespace Drydock.Interop.Tests.Fixtures;

/// <summary>Tests sharing one qemu-storage-daemon (each with its own node, bitmap and export names).</summary>
[CollectionDefinition(Name)]
public sealed class QemuStorageDaemonCollection : ICollectionFixture<QemuStorageDaemonFixture>
{
    public const string Name = "qemu-storage-daemon";
}

/// <summary>Tests sharing one generated PKI (certificates are read-only once written).</summary>
[CollectionDefinition(Name)]
public sealed class TestPkiCollection : ICollectionFixture<TestPki>
{
    public const string Name = "test-pki";
}
