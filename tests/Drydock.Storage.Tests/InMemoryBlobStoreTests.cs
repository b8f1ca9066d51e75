using Drydock.Storage.InMemory;

namespace Drydock.Storage.Tests;

public sealed class InMemoryBlobStoreTests : BlobStoreContract
{
    protected override Task<IBlobStore> CreateStoreAsync() => Task.FromResult<IBlobStore>(new InMemoryBlobStore());
}
